"""`python -m wildfire_kd.edge`: the edge image's entry point (`wildfire-kd-edge`)."""

import sys

from .cli import main

sys.exit(main())
