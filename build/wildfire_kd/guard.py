"""Nothing the user gave is ever overwritten: the one rule every command that writes checks before it writes.

A command names what it owns (the files it writes and the folders it creates, clears or rewrites) and what it was
given (weights, model files, frames, a dataset's folder). Before any work, an input inside something the command
owns, or something it owns inside a dataset, is refused (exit 2) naming both and the fix. Standard library only: the
camera runtime (edge/) uses it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import InputError


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_overwriting_inputs(
    owned: Iterable[str | Path],
    inputs: Iterable[str | Path | None],
    flag: str = "--out",
    datasets: Iterable[str | Path | None] = (),
) -> None:
    """Exit 2 when an input is, or lies inside, something the command owns; or something it owns lies inside a
    dataset's folder (a dataset is never written to). Paths are compared resolved (links, ``..``)."""
    given = [Path(p).resolve() for p in inputs if p is not None]
    roots = [Path(p).resolve() for p in datasets if p is not None]
    for path in (Path(p).resolve() for p in owned):
        if overwritten := next((g for g in given if _within(g, path)), None):
            raise InputError(
                f"{flag}: {path} would be written over {overwritten}, which you gave as an input; "
                f"wildfire-kd never overwrites an input: choose another {flag}"
            )
        if dataset := next((r for r in roots if _within(path, r)), None):
            raise InputError(
                f"{flag}: {path} is inside the dataset {dataset}, and wildfire-kd never writes into a dataset: "
                f"choose a {flag} outside it"
            )
