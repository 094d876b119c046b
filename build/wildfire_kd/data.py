"""Datasets: resolving a YOLO-format data.yaml, the preflight that runs before training, the synthetic set.

The preflight reads the file listing and the labels and decodes every image once (never writing into the
dataset), so an image ultralytics would drop ("corrupt") is named before training instead of silently missing
from it; it gives file-named errors instead of the tracebacks ultralytics would raise deep inside a dataloader.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .edge.letterbox import IMAGE_SUFFIXES
from .errors import InputError
from .textfiles import read_text, read_yaml

MAX_LISTED = 5  # file names quoted in one error message


@dataclass
class SplitInfo:
    images: int
    labelled_images: int
    background_images: int
    instances: list[int]  # per class id


@dataclass
class DatasetInfo:
    yaml_path: str
    names: list[str]
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    bad_fraction: float = 0.0
    problems: dict[str, list[str]] = field(default_factory=dict)
    bad_images: list[str] = field(default_factory=list)  # images with a problem, tolerated up to max_bad_fraction
    files: dict[str, list[Path]] = field(default_factory=dict, repr=False)  # each checked split's images, in order
    digests: dict[str, str] = field(default_factory=dict, repr=False)  # sha256 of each image's bytes -> its path

    @property
    def nc(self) -> int:
        return len(self.names)

    def images(self, split: str) -> list[Path]:
        """The image files of ``split``, as the preflight listed them (it must have checked that split)."""
        if split not in self.files:
            raise InputError(f"{self.yaml_path}: the preflight did not check the {split} split")
        return list(self.files[split])

    def usable(self, split: str) -> list[Path]:
        """The images of ``split`` without those the preflight found a problem in (tolerated, not used)."""
        bad = set(self.bad_images)
        return [p for p in self.images(split) if str(p) not in bad]

    def to_dict(self) -> dict[str, Any]:
        report = asdict(self)
        del report["files"], report["digests"]  # preflight.json counts and names problems; the listing is the data's
        return report


def _names_list(raw: Any, source: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise InputError(f"{source}: 'names' keys must be class ids 0..n-1, got {list(raw)}") from None
        if ids != list(range(len(ids))):
            raise InputError(f"{source}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in ids]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise InputError(f"{source}: 'names' must list the class names, e.g. names: {{0: smoke, 1: fire}}")


def read_data_yaml(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Parse a data.yaml; returns the mapping and the dataset root its split paths are relative to."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"dataset file not found: {p} (pass a YOLO-format data.yaml to --data)")
    data = read_yaml(p, "a YOLO-format data.yaml to --data")
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping with train:, val: and names:")
    # ultralytics' rule: no 'path:' means the yaml's folder; a relative 'path:' is relative to the working dir
    root = Path(data["path"]).expanduser() if data.get("path") else p.parent
    return data, root.resolve()


def class_names(path: str | Path) -> list[str]:
    data, _ = read_data_yaml(path)
    return _names_list(data.get("names"), Path(path))


def _image_files(entry: Path, source: Path, split: str) -> list[Path]:
    if entry.is_dir():
        return sorted(f for f in entry.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths, relative to the list's folder
        lines = [
            ln.strip() for ln in read_text(entry, f"a text file listing the {split} images").splitlines() if ln.strip()
        ]
        return [(entry.parent / ln).resolve() if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    raise InputError(f"{source}: {split} path does not exist: {entry} (fix '{split}:' or the dataset's 'path:')")


def label_path(image: Path) -> Path:
    """ultralytics' rule: the last '/images/' in the path becomes '/labels/', the suffix becomes .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(image)
    if sa in s:
        head, _, tail = s.rpartition(sa)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


# problem kinds; "bad" ones count towards train.max_bad_fraction, the rest are reported only
BAD = ("unreadable_image", "malformed_label", "coordinates_out_of_range", "class_id_out_of_range", "duplicate_image")
NOTED = ("truncated_jpeg",)  # decode whole but lack the end marker: ultralytics repairs a copy in the mirror


@dataclass
class PreflightProblems:
    by_kind: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in BAD + NOTED})
    bad_images: set[str] = field(default_factory=set)

    def add(self, kind: str, where: str, image: Path) -> None:
        self.by_kind[kind].append(where)
        if kind in BAD:
            self.bad_images.add(str(image))


def jpeg_truncated(path: Path) -> bool:
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    with open(path, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() != b"\xff\xd9"


def undecodable(image: Path) -> str | None:
    """Why ``image`` does not decode whole (None when it does): every pixel is read, as training will."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            im.verify()
        with Image.open(image) as im:
            im.load()  # verify() reads headers only: a JPEG cut in half passes it and fails here
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def check_image(image: Path, problems: PreflightProblems, seen: dict[str, str]) -> str | None:
    """Decode ``image`` whole and hash its bytes: problems into ``problems``, the digest into ``seen`` (digest ->
    the first image with those bytes; a second one is a duplicate). Returns the digest, None when unreadable."""
    import hashlib

    reason = undecodable(image)
    if reason is not None:
        problems.add("unreadable_image", f"{image} ({reason})", image)
        return None
    try:
        data = image.read_bytes()
    except OSError as e:
        problems.add("unreadable_image", f"{image} ({type(e).__name__}: {e})", image)
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        problems.add("duplicate_image", f"{image} (same bytes as {seen[digest]})", image)
    else:
        seen[digest] = str(image)
    if jpeg_truncated(image):
        problems.add("truncated_jpeg", str(image), image)
    return digest


def _check_split(files: list[Path], nc: int, problems: PreflightProblems, seen: dict[str, str]) -> SplitInfo:
    instances = [0] * nc
    labelled = 0
    for image in files:
        check_image(image, problems, seen)
        lbl = label_path(image)
        if not lbl.is_file():
            continue  # background image
        rows = [r.split() for r in lbl.read_text(encoding="utf-8", errors="replace").splitlines() if r.strip()]
        if rows:
            labelled += 1
        for n, row in enumerate(rows, 1):
            try:
                cls = int(float(row[0]))
                coords = [float(v) for v in row[1:5]]
            except (ValueError, IndexError):
                problems.add("malformed_label", f"{lbl}:{n}", image)
                continue
            if len(row) < 5 or cls < 0:
                problems.add("malformed_label", f"{lbl}:{n}", image)
            elif cls >= nc:
                problems.add("class_id_out_of_range", f"{lbl}:{n} (class {cls})", image)
            elif any(not 0.0 <= v <= 1.0 for v in coords):
                problems.add("coordinates_out_of_range", f"{lbl}:{n}", image)
            else:
                instances[cls] += 1
    return SplitInfo(len(files), labelled, len(files) - labelled, instances)


_FIXES = {
    "unreadable_image": "remove or replace the file",
    "malformed_label": "each line must be 'class x_center y_center width height', normalised to 0..1",
    "coordinates_out_of_range": "coordinates are normalised to 0..1",
    "class_id_out_of_range": "fix the labels or add the class to 'names:'",
    "duplicate_image": "remove the copies (a val image that is also a train image inflates every metric)",
}


def preflight(
    path: str | Path,
    splits: Sequence[str] = ("train", "val"),
    max_bad_fraction: float = 0.0,
    report: str | Path | None = None,
) -> DatasetInfo:
    """Check a dataset before anything expensive runs: paths, non-empty splits, images and labels.

    Every problem is counted and listed (in ``report`` as JSON when given); more than ``max_bad_fraction`` of
    the images with a problem raises InputError naming the files. Reads only; the dataset is never modified.
    """
    source = Path(path)
    data, _ = read_data_yaml(source)
    names = _names_list(data.get("names"), source)
    info = DatasetInfo(yaml_path=str(source.resolve()), names=names)
    problems, seen = PreflightProblems(), {}
    for split in splits:
        info.files[split] = split_images(source, split)
        info.splits[split] = _check_split(info.files[split], len(names), problems, seen)
    total = sum(s.images for s in info.splits.values())
    info.bad_fraction = len(problems.bad_images) / total
    info.problems = {k: v for k, v in problems.by_kind.items() if v}
    info.bad_images = sorted(problems.bad_images)
    info.digests = seen
    if report is not None:
        write_preflight_report(info, report, max_bad_fraction)
    if info.bad_fraction > max_bad_fraction:
        details = "; ".join(
            f"{len(v)} {k.replace('_', ' ')}: {', '.join(v[:MAX_LISTED])}{' ...' if len(v) > MAX_LISTED else ''} "
            f"({_FIXES[k]})"
            for k, v in info.problems.items()
            if k in BAD
        )
        raise InputError(
            f"{source}: {len(problems.bad_images)} of {total} images have problems ({info.bad_fraction:.1%} > "
            f"train.max_bad_fraction {max_bad_fraction:.1%}): {details}"
        )
    return info


def write_preflight_report(info: DatasetInfo, path: str | Path, max_bad_fraction: float) -> None:
    from .reports import write_json

    write_json(path, {**info.to_dict(), "max_bad_fraction": max_bad_fraction})


def split_images(path: str | Path, split: str) -> list[Path]:
    """The image files of one split, in a stable order; InputError when the split is missing or empty."""
    source = Path(path)
    data, root = read_data_yaml(source)
    raw = data.get(split)
    if not raw:
        raise InputError(f"{source}: no '{split}:' split (add e.g. '{split}: images/{split}')")
    entries = raw if isinstance(raw, list) else [raw]
    searched = [Path(e) if Path(e).is_absolute() else root / e for e in entries]  # after resolving 'path:'
    files: list[Path] = []
    for entry in searched:
        files += _image_files(entry, source, split)
    if not files:
        where = ", ".join(str(p.resolve()) for p in searched)
        raise InputError(
            f"{source}: the {split} split is empty: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {where}"
        )
    return files


def dataset_folders(path: str | Path) -> list[Path]:
    """The folders a dataset keeps its images and labels in (each split's folder and its labels/ counterpart):
    nothing wildfire-kd writes may land in them (guard.refuse_overwriting_inputs)."""
    source = Path(path)
    data, root = read_data_yaml(source)
    folders: list[Path] = []
    for split in ("train", "val", "test"):
        raw = data.get(split)
        for entry in raw if isinstance(raw, list) else [raw] if raw else []:
            folder = Path(entry) if Path(entry).is_absolute() else root / entry
            if folder.is_dir():
                folders += [folder, label_path(folder / "x.jpg").parent]
    return folders


@dataclass
class TeacherClasses:
    """How a teacher's classes answer for the dataset's: ``keep[i]`` is the teacher's class index for the dataset's
    class i (selected and ordered by name, through distill.class_map)."""

    teacher: list[str]  # the teacher's own class names, in its order
    dataset: list[str]
    keep: list[int]

    @property
    def identical(self) -> bool:
        """The teacher's classes are the dataset's, in the same order: nothing to select."""
        return self.teacher == self.dataset

    def describe(self) -> str:
        pairs = ", ".join(
            f"{d} <- teacher's {self.teacher[k]!r} (#{k})" for d, k in zip(self.dataset, self.keep, strict=True)
        )
        left = [n for i, n in enumerate(self.teacher) if i not in self.keep]
        return f"teacher classes {self.teacher} answer for the dataset's {self.dataset}: {pairs}" + (
            f"; not distilled: {left}" if left else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher, "dataset": self.dataset, "teacher_index": self.keep}


def _missing_class(dataset_name: str, wanted: str, teacher_names: list[str]) -> str:
    """A dataset class the teacher has no class for, said as it is: the name looked for, and where a mapping led
    there from a name the teacher does know."""
    if wanted == dataset_name:
        return f"{wanted!r}"
    known = f"; it does know {dataset_name!r} itself: drop that mapping" if dataset_name in teacher_names else ""
    return f"{wanted!r} (distill.class_map maps the dataset's {dataset_name!r} to it{known})"


def teacher_classes(
    teacher_names: Sequence[str], data_names: Sequence[str], class_map: dict[str, str], teacher: str, data: str
) -> TeacherClasses:
    """Each of the dataset's classes found among the teacher's by name (``class_map``: dataset name -> teacher name
    where they differ). A teacher that knows more classes answers for the dataset's only; a dataset class the
    teacher does not know is exit 2 naming both lists and the key that maps names.

    The order matters no more: a teacher trained on [fire, smoke] answers for data labelled [smoke, fire] by name,
    where comparing by index would silently teach the student to call smoke fire.
    """
    teacher_names, data_names = list(teacher_names), list(data_names)
    unknown_keys = sorted(set(class_map) - set(data_names))
    if unknown_keys:
        raise InputError(
            f"distill.class_map maps {unknown_keys}, which are not classes of the dataset {data} ({data_names}); "
            "its keys are the dataset's class names, its values the teacher's"
        )
    wanted = [class_map.get(name, name) for name in data_names]
    missing = [_missing_class(d, w, teacher_names) for d, w in zip(data_names, wanted, strict=True)
               if w not in teacher_names]  # fmt: skip
    if missing:
        mapped = any(class_map.get(n, n) != n and class_map[n] not in teacher_names for n in data_names)
        fix = (
            "Correct distill.class_map: each dataset class name maps to one of the teacher's"
            if mapped
            else "Map differing names with distill.class_map (e.g. --set 'distill.class_map={smoke: Smoke}'), or "
            "finetune a teacher on this dataset's classes"
        )
        raise InputError(
            f"class names differ: teacher {teacher} has {teacher_names}, dataset {data} has {data_names}; the "
            f"teacher knows no class {', '.join(missing)}. {fix}"
        )
    if len(set(wanted)) != len(wanted):
        mapping = dict(zip(data_names, wanted, strict=True))
        raise InputError(f"distill.class_map maps two dataset classes to one teacher class: {mapping}")
    return TeacherClasses(teacher_names, data_names, [teacher_names.index(w) for w in wanted])


def mirror(path: str | Path, root: str | Path, info: DatasetInfo | None = None) -> Path:
    """A mirror of the dataset built from links, for ultralytics to read; returns its data.yaml.

    ultralytics writes label caches beside the labels and rewrites truncated JPEGs in place. Pointed at the
    mirror, it writes only into ``root``: truncated JPEGs are copied there rather than linked, so the repair
    never reaches the original file. ``info``: the dataset's preflight, whose listing of the splits it checked
    is used instead of listing them again.
    """
    source = Path(path)
    data, _ = read_data_yaml(source)
    root = Path(root).resolve()
    if root.exists():
        shutil.rmtree(root)
    mirrored: dict[str, Any] = {"path": str(root), "names": dict(enumerate(_names_list(data.get("names"), source)))}
    for split in ("train", "val", "test"):
        if not data.get(split):
            continue
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        used: set[str] = set()
        listed = info.images(split) if info is not None and split in info.files else split_images(source, split)
        for i, image in enumerate(listed):
            name = image.name if image.name not in used else f"{i:06d}_{image.name}"
            used.add(name)
            target = img_dir / name
            if jpeg_truncated(image):
                shutil.copyfile(image, target)
            else:
                _link(image, target)
            label = label_path(image)
            if label.is_file():
                _link(label, (lbl_dir / name).with_suffix(".txt"))
        mirrored[split] = f"images/{split}"
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(mirrored, sort_keys=False), encoding="utf-8")
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # filesystems without symlinks: a copy is slower but just as safe
        shutil.copyfile(src, dst)
