"""The unlabelled pool (`train.unlabeled`): a camera network's own frames, which teach only through the KD terms.

Its preflight reads the folders as the dataset's preflight reads a split (every image decoded once, problems counted
and listed, ``train.max_bad_fraction`` applies, nothing written) and refuses what would spoil a run: a folder that is
missing or empty, one that holds label files (those frames are labelled: put them in the train split), and any frame
that is also in the labelled or val split (the same file, or the same bytes): a val frame in the pool would inflate
every figure. What it accepted is frozen in the run folder (``unlabeled.txt``: one frame per line) so that resuming
trains on the same frames while a camera keeps uploading; ``unlabeled.json`` says how many taught the student and
where they came from (validation and the model card read it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data import BAD, MAX_LISTED, DatasetInfo, PreflightProblems, check_image, jpeg_truncated, label_path
from .edge.letterbox import IMAGE_SUFFIXES
from .errors import InputError
from .guard import atomic_write_text
from .layout import UNLABELED_LIST, UNLABELED_REPORT
from .reports import write_json

KEY = "train.unlabeled"
MIRROR_SPLIT = "unlabeled"  # the pool's folder in a run's dataset mirror: images/unlabeled, no labels


@dataclass
class PoolInfo:
    """The unlabelled frames the preflight accepted, and what it found."""

    folders: list[str]
    images: list[str]  # the frames that teach, in a stable order (absolute paths)
    listed: int  # frames found in the folders (or in a resumed run's list)
    sha256: str  # of the pool's content: one "sha256  path" line per frame that teaches (as SHA256SUMS)
    bad_fraction: float = 0.0
    problems: dict[str, list[str]] = field(default_factory=dict)
    bad_images: list[str] = field(default_factory=list)  # tolerated up to train.max_bad_fraction, not used

    def summary(self) -> dict[str, Any]:
        """What train.json, unlabeled.json and the reports keep: counts and where from, not the listing."""
        report = asdict(self)
        report["images"] = len(self.images)
        return report


def _frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _listed(folders: list[str]) -> list[Path]:
    """Every frame under ``folders``; a folder that is missing, not a folder or holds no frame is exit 2."""
    frames: list[Path] = []
    for given in folders:
        folder = Path(given)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise InputError(f"{KEY}: {folder} {what}; pass a folder of unlabelled frames (--unlabeled DIR)")
        found = _frames(folder)
        if not found:
            raise InputError(
                f"{KEY}: {folder} holds no frames ({', '.join(sorted(IMAGE_SUFFIXES))}); pass a folder of unlabelled "
                "frames, or drop it from --unlabeled"
            )
        frames += found
    return frames


def _refuse_labels(frames: list[Path], folders: list[str]) -> None:
    """A frame with a label file beside it (ultralytics' images/ -> labels/ rule, or the same name .txt) is labelled."""
    labelled = [lbl for f in frames for lbl in {label_path(f), f.with_suffix(".txt")} if lbl.is_file()]
    if labelled:
        shown = ", ".join(map(str, sorted(labelled)[:MAX_LISTED])) + (" ..." if len(labelled) > MAX_LISTED else "")
        raise InputError(
            f"{KEY}: {', '.join(folders)} holds label files for {len(labelled)} frames ({shown}): those frames are "
            "labelled, so put them in data.yaml's train split; the pool is for frames nobody labelled"
        )


def _refuse(overlaps: list[str], info: DatasetInfo) -> None:
    if overlaps:
        shown = "; ".join(overlaps[:MAX_LISTED]) + (" ..." if len(overlaps) > MAX_LISTED else "")
        raise InputError(
            f"{KEY}: {len(overlaps)} frames of the unlabelled pool are also in the dataset {info.yaml_path} ({shown}); "
            "a val frame in the pool inflates every figure and a train frame would be taught twice: remove them from "
            "the pool's folders"
        )


def _dataset_files(info: DatasetInfo) -> dict[Path, str]:
    return {p.resolve(): split for split, paths in info.files.items() for p in paths}


def _refuse_same_files(frames: list[Path], info: DatasetInfo) -> None:
    """No frame of the pool may be a dataset image's file (the folder itself, a link to it)."""
    dataset = _dataset_files(info)
    _refuse([f"{f} is {split} image {f.resolve()}" for f in frames if (split := dataset.get(f.resolve()))], info)


def _refuse_same_bytes(digests: dict[Path, str], info: DatasetInfo) -> None:
    """No frame of the pool may hold a dataset image's bytes (a copy under another name)."""
    _refuse([f"{f} has the same bytes as {info.digests[d]}" for f, d in digests.items() if d in info.digests], info)


def preflight_pool(
    folders: list[str], info: DatasetInfo, max_bad_fraction: float = 0.0, listed: list[str] | None = None
) -> PoolInfo:
    """Check the unlabelled folders against the dataset ``info`` (its preflight, which holds its digests).

    ``listed``: the frames a run already trained on (resuming): those are checked instead of listing the folders
    again. Reads only. More than ``max_bad_fraction`` of the frames unreadable: exit 2 naming them."""
    frames = [Path(p) for p in listed] if listed is not None else _listed(folders)
    missing = [str(p) for p in frames if not p.is_file()]
    if missing:
        raise InputError(
            f"{KEY}: {len(missing)} frames the run trained on are gone ({', '.join(missing[:MAX_LISTED])}); put them "
            "back to resume, or start a new run"
        )
    _refuse_same_files(frames, info)
    _refuse_labels(frames, folders)
    problems, seen, digests = PreflightProblems(), {}, {}
    for frame in frames:
        if (digest := check_image(frame, problems, seen)) is not None:
            digests[frame] = digest
    _refuse_same_bytes(digests, info)
    noted = {k: v for k, v in problems.by_kind.items() if v}
    if "duplicate_image" in noted:  # the same bytes twice in a pool teach twice; harmless, so only reported
        problems.bad_images -= {p.split(" (same bytes")[0] for p in noted["duplicate_image"]}
    bad = sorted(problems.bad_images)
    pool = PoolInfo(
        folders=[str(Path(f).resolve()) for f in folders],
        images=[str(f.resolve()) for f in frames if str(f) not in problems.bad_images],
        listed=len(frames),
        sha256=_content_digest(frames, digests, problems.bad_images),
        bad_fraction=len(bad) / len(frames),
        problems=noted,
        bad_images=bad,
    )
    if pool.bad_fraction > max_bad_fraction:
        details = "; ".join(f"{len(v)} {k.replace('_', ' ')}: {', '.join(v[:MAX_LISTED])}" for k, v in noted.items()
                            if k in BAD and k != "duplicate_image")  # fmt: skip
        raise InputError(
            f"{KEY}: {len(bad)} of {len(frames)} unlabelled frames cannot be used ({pool.bad_fraction:.1%} > "
            f"train.max_bad_fraction {max_bad_fraction:.1%}): {details} (remove or replace those files)"
        )
    return pool


def _content_digest(frames: list[Path], digests: dict[Path, str], bad: set[str]) -> str:
    lines = "".join(f"{digests[f]}  {f.resolve()}\n" for f in frames if str(f) not in bad)
    return hashlib.sha256(lines.encode()).hexdigest()


def write_run_files(pool: PoolInfo, run_dir: Path, settings: dict[str, Any]) -> Path:
    """The run's own record of its pool: unlabeled.txt (the frames, frozen for resuming) and unlabeled.json
    (counts, folders, the content digest and ``settings``). Returns the list's path."""
    listing = run_dir / UNLABELED_LIST
    atomic_write_text(listing, "".join(f"{p}\n" for p in pool.images))
    write_json(run_dir / UNLABELED_REPORT, {**pool.summary(), **settings})
    return listing


def read_run_list(run_dir: Path) -> list[str] | None:
    """The frames a run trained on (its unlabeled.txt), or None when it had no pool."""
    listing = Path(run_dir) / UNLABELED_LIST
    if not listing.is_file():
        return None
    return [ln for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_report(weights: str | Path) -> dict[str, Any] | None:
    """The unlabeled.json of the run that wrote ``weights`` (RUN/weights/best.pt), or None when it had no pool."""
    return _read_report(Path(weights).resolve().parent.parent / UNLABELED_REPORT)


def update_run_report(run_dir: Path, **figures: Any) -> dict[str, Any] | None:
    """Add ``figures`` (what training did with the pool) to the run's unlabeled.json; None when it has none."""
    report = _read_report(Path(run_dir) / UNLABELED_REPORT)
    if report is None:
        return None
    report.update(figures)
    write_json(Path(run_dir) / UNLABELED_REPORT, report)
    return report


def describe_taught(report: dict[str, Any]) -> str:
    """One sentence on what the pool taught, from a run's unlabeled.json (validation.md and the model card)."""
    folders = ", ".join(f"`{f}`" for f in report["folders"])
    text = (
        f"Besides the labelled split, {report['images']} unlabelled frames from {folders} (content sha256 "
        f"{report['sha256'][:12]}…) taught the student through the KD terms only (distill.unlabeled_ratio "
        f"{report['ratio']:g}, weight {report['weight']:g})"
    )
    if "epochs_completed" in report:
        text += (
            f": {report['per_epoch']} per epoch, {report['distinct_frames_seen']} distinct frames over "
            f"{report['epochs_completed']} epochs"
        )
    skipped = len(report.get("bad_images", []))
    return text + (f"; {skipped} unreadable frames were left out." if skipped else ".")


def mirror_pool(images: list[str], folder: Path) -> Path:
    """``folder`` holding links to ``images`` (copies of truncated JPEGs, which ultralytics repairs in place) and
    nothing else, for ultralytics to read; ``folder`` lies under an images/ folder (a run's dataset mirror), and
    each frame gets an empty label file under the matching labels/ folder: ultralytics refuses to train on a set
    without one (the ground truth never sees them: the pool's frames teach through the KD terms only). Its label
    cache lands there too, never in the user's folders. Frames of the same name in different folders are numbered."""
    labels = label_path(folder / "x.jpg").parent
    for made in (folder, labels):
        if made.exists():
            shutil.rmtree(made)
        made.mkdir(parents=True)
    used: set[str] = set()
    for i, image in enumerate(Path(p) for p in images):
        name = image.name if image.name not in used else f"{i:07d}_{image.name}"
        used.add(name)
        target = folder / name
        if jpeg_truncated(image):
            shutil.copyfile(image, target)
        else:
            try:
                os.symlink(image.resolve(), target)
            except OSError:  # filesystems without symlinks: a copy is slower but just as safe
                shutil.copyfile(image, target)
        label_path(target).touch()
    return folder
