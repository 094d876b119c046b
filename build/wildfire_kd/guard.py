"""What every command that writes relies on, in one place (standard library only: the camera runtime uses it too).

- Nothing the user gave is ever overwritten: a command names what it owns (the files it writes and the folders it
  creates, clears or rewrites) and what it was given (weights, model files, frames, a dataset's folder). Before any
  work, an input inside something the command owns, or something it owns inside a dataset, is refused (exit 2)
  naming both and the fix.
- Nothing is left half-written: every file others read is written to a temporary file beside it and renamed over it
  (``atomic_file``), so after a crash or a full disk it is the previous file or the new one, whole.
- One run at a time per folder: ``lock_folder`` takes an OS file lock on the folder a command writes (released when
  the process ends, however it ends, or when the library call that took it returns: ``releases_its_locks``); a
  second run into it is refused naming the holder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def replace_durably(tmp: str | Path, final: str | Path) -> None:
    """fsync ``tmp``, rename it over ``final``, fsync the folder: after a crash either file is whole."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(Path(final).parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that go by it still do): what the block writes
    there replaces ``path`` durably when the block ends (:func:`replace_durably`); on an error it is removed and
    ``path`` keeps its previous content. The one way wildfire-kd writes a file that others read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and durably: readers never see a half-written file."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


_held: dict[Path, int] = {}  # folders this process has locked: their open descriptors (the lock lives as long)


def _holder(folder: Path) -> str:
    """The pid holding an flock on ``folder`` (from /proc/locks, Linux), or 'another process'."""
    stat = folder.stat()
    where = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    pids = [parts[4] for parts in (ln.split() for ln in lines) if len(parts) > 5 and parts[1] == "FLOCK" and
            parts[5] == where]  # fmt: skip
    return f"pid {pids[0]}" if pids else "another process"


def lock_folder(folder: str | Path, flag: str = "--out") -> Path:
    """An exclusive OS lock (flock) on ``folder`` (created if missing) for the rest of this process: it ends when the
    process does, however it ends (a kill -9 leaves no stale lock). A folder another run holds: exit 2 naming it and
    the holder's pid. Locking a folder this process already holds is a no-op."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(
            f"{flag} {folder} is in use by another wildfire-kd run ({_holder(folder)}): two runs into one folder "
            f"would mix their files; wait for it to finish, or choose another {flag}"
        ) from None
    os.set_inheritable(fd, False)
    _held[folder] = fd
    return folder


def releases_its_locks(function):
    """Decorate a command's library entry point: the folder locks it takes are given up when it returns or raises.
    Called from Python (pipeline.build in a notebook, a test that interrupts a training), a run must not keep its
    folder locked for the rest of the process, or the rerun that resumes it is refused as "in use". Locks the caller
    already held stay held."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        before = set(_held)
        try:
            return function(*args, **kwargs)
        finally:
            for folder in set(_held) - before:
                os.close(_held.pop(folder))

    return wrapper


def release_folders() -> None:
    """Give up this process's folder locks: a command that ends before its process does (the CLI in a test)."""
    while _held:
        os.close(_held.popitem()[1])


FULL_DISK_ERRNOS = {28, 122}  # ENOSPC, EDQUOT (a quota): the environment, not the input nor the tool
NEARLY_FULL_BYTES = 16 * 2**20  # less than this free where a command writes: a failed write there was the disk


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_full(error: BaseException, folder: str | Path | None) -> str | None:
    """Why ``error`` is a full disk, in one line naming the path and the space, or None when it is not one: an OSError
    ENOSPC / EDQUOT anywhere in its chain, or any failed write while ``folder``'s filesystem has almost nothing left
    (libraries that write through their own code, torch.save, say, say only "file write failed")."""
    import shutil

    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    errno_error = next((e for e in chain if isinstance(e, OSError) and e.errno in FULL_DISK_ERRNOS), None)
    where = Path(getattr(errno_error, "filename", None) or folder or ".")
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    if errno_error is None and usage.free >= NEARLY_FULL_BYTES:
        return None
    return (
        f"no space left on the device of {where} ({_mb(usage.free)} free of {_mb(usage.total)}); free some space "
        "there or choose another output folder (the previous complete outputs are kept)"
    )
