import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared fixtures in tests/conftest.py

from conftest import *  # noqa: E402,F401,F403
