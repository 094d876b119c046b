"""validation.md (a side-by-side table) and validation.png (a chart) of a ValidationResult."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ValidateSettings
from ..guard import atomic_file, atomic_write_text
from ..pool import describe_taught
from .result import ACCURACY, LABELS, ValidationResult, ratio, worst_retention


def _fmt(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def markdown(result: ValidationResult, data: str, settings: ValidateSettings, imgsz: int) -> str:
    t, s = result.teacher, result.student
    lines = [
        "# Student vs teacher",
        "",
        f"Data `{data}`, split `{settings.split}`, imgsz {imgsz}, conf {settings.conf}, IoU {settings.iou}.",
        "",
        f"**{'PASSED' if result.passed else 'FAILED'}**",
        "",
        "| metric | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
    ]
    for key in ACCURACY:
        lines.append(
            f"| {LABELS[key]} | {_fmt(getattr(t, key))} | {_fmt(getattr(s, key))} | {_fmt(result.retention[key])} |"
        )
    agreement = _fmt(result.teacher_agreement) if result.teacher_agreement is not None else "undefined*"
    lines.append(f"| teacher agreement (student mAP50 vs teacher predictions) | – | {agreement} | – |")
    for key, label, digits in (
        ("parameters", "parameters", 0),
        ("gflops", "GFLOPs", 2),
        ("size_mb", "file MB", 2),
        ("latency_ms", "latency ms (median, batch 1)", 2),
    ):
        tv, sv = getattr(t, key), getattr(s, key)
        lines.append(f"| {label} | {_fmt(tv, digits)} | {_fmt(sv, digits)} | {_fmt(ratio(sv, tv), 3)} |")
    lines += [
        "",
        "## Per class",
        "",
        "| class | instances | teacher mAP50 | student mAP50 | teacher mAP50-95 | student mAP50-95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in result.classes:
        tc, sc = t.per_class[name], s.per_class[name]
        lines.append(
            f"| {name} | {sc['instances']} | {_fmt(tc['map50'])} | {_fmt(sc['map50'])} | "
            f"{_fmt(tc['map50_95'])} | {_fmt(sc['map50_95'])} |"
        )
    if result.teacher_agreement is None:
        lines += [
            "",
            f"\\* the teacher predicts nothing at confidence ≥ {settings.agreement_conf} on this split, so "
            "there is nothing to agree with (validation.agreement_conf).",
        ]
    if result.unlabeled:
        lines += ["", "## Unlabelled frames", "", describe_taught(result.unlabeled)]
    lines += _operating_point_markdown(result.operating_point)
    lines += _camera_markdown(result.camera_figures)
    lines += _sequences_markdown(result.sequences)
    lines += _robustness_markdown(result.robustness)
    lines += ["", "## Gates", ""]
    lines += [f"- {'✓' if g.passed else '✗'} {g.describe()}" for g in result.gates] or ["- none configured"]
    return "\n".join(lines) + "\n"


def _operating_point_markdown(point: dict[str, Any] | None) -> list[str]:
    if not point:
        return []
    if point.get("conf") is None:
        return ["", f"## Operating point: none ({point['unreachable']}; rule {point['rule']})"]
    t_pr = point["teacher"] or {"p": None, "r": None}
    return [
        "",
        "## Operating point (shipped in the ONNX file; `wildfire-kd detect` uses it)",
        "",
        f"Confidence **{point['conf']:g}** ({point['rule'].replace('_', ' ')} on this split).",
        "",
        "| at this confidence | teacher | student |",
        "|---|---:|---:|",
        f"| precision | {_fmt(t_pr['p'])} | {_fmt(point['student']['p'])} |",
        f"| recall | {_fmt(t_pr['r'])} | {_fmt(point['student']['r'])} |",
    ]


def _camera_markdown(camera: dict[str, Any] | None) -> list[str]:
    if not camera:
        return []
    t, s = camera["teacher"], camera["student"]
    lines = [
        "",
        f"## Camera figures at confidence {camera['conf']:g}",
        "",
        "| | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
        f"| false alarms per 1000 smoke-free frames ({s['negative_frames']} frames) | "
        f"{_fmt(t['false_alarms_per_1000'], 1)} | {_fmt(s['false_alarms_per_1000'], 1)} | – |",
    ]
    for bucket in ("small", "medium", "large"):
        tb, sb = t["recall_by_size"][bucket], s["recall_by_size"][bucket]
        lines.append(
            f"| recall, {bucket} objects ({sb['objects']}) | {_fmt(tb['recall'])} | {_fmt(sb['recall'])} | "
            f"{_fmt(camera['recall_retention'][bucket])} |"
        )
    lines.append("")
    lines.append(
        f"Small: under {camera['small_area']:.2%} of the image area; large: {camera['large_area']:.2%} or more."
    )
    if s["unreadable"]:
        lines.append(f"Unreadable smoke-free frames, not scored: {', '.join(s['unreadable'])}.")
    return lines


def _minutes(f: dict[str, Any]) -> str:
    median = f["median_minutes_to_detection"]
    return "–" if median is None else f"{median:.1f} (mean {f['mean_minutes_to_detection']:.1f})"


def _sequences_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    t, s = section["teacher"], section["student"]
    rows = [
        ("fire sequences alarmed on the plume (recall)", "recall", 3),
        ("precision", "precision", 3),
        ("F1", "f1", 3),
        ("false-positive rate (smoke-free sequences with an alarm)", "false_positive_rate", 3),
        ("false alarms per camera-day", "false_alarms_per_camera_day", 2),
        ("alerts per fire found (one event per fire: 1)", "alerts_per_fire", 2),
        ("detections suppressed as static", "suppressed", 0),
    ]
    lines = [
        "",
        f"## Camera sequences: {section.get('profile_text', 'the model size')}, alarm rule {section['rule_text']}",
        "",
        f"`{section['folder']}`: {s['positives']} fire and {s['negatives']} smoke-free sequences through the camera "
        f"path; the rule was chosen on the student's detections (it ships in the model file): "
        + (
            f"the most fires found within {section['budget_per_camera_day']:g} false alarm(s) per camera-day."
            if section["within_budget"]
            else f"no rule stayed within {section['budget_per_camera_day']:g} false alarm(s) per camera-day; this "
            "one raises the fewest."
        ),
        "",
        "| | teacher | student |",
        "|---|---:|---:|",
        f"| median minutes from onset to the alarm | {_minutes(t)} | {_minutes(s)} |",
    ]
    lines += [f"| {label} | {_fmt(t[key], d)} | {_fmt(s[key], d)} |" for label, key, d in rows]
    lines += ["", "| sequence | fire | teacher: found, minutes, false alarms | student: found, minutes, false alarms |"]
    lines.append("|---|---|---|---|")
    for ts, ss in zip(t["per_sequence"], s["per_sequence"], strict=True):
        cells = [
            f"{'✓' if o['detected'] else '✗' if o['positive'] else '–'}, {_fmt(o['minutes_to_detection'], 0)}, "
            f"{o['false_alarms']}"
            for o in (ts, ss)
        ]
        lines.append(f"| {ss['name']} | {'yes' if ss['positive'] else 'no'} | {cells[0]} | {cells[1]} |")
    lines += _profiles_markdown(section, s)
    unreadable = section.get("unreadable_frames") or []
    if unreadable:
        shown = ", ".join(f"`{u}`" for u in unreadable[:5]) + (" …" if len(unreadable) > 5 else "")
        lines += ["", f"{len(unreadable)} listed frame(s) could not be read and were left out: {shown}."]
    unmasked = section.get("student_without_masks")
    if unmasked:
        lines += [
            "",
            f"Without the cameras' masks the student raises {_fmt(unmasked['false_alarms_per_camera_day'], 2)} false "
            f"alarms per camera-day ({unmasked['false_alarms']} in all; recall {_fmt(unmasked['recall'])}).",
        ]
    return lines


def _profiles_markdown(section: dict[str, Any], student: dict[str, Any]) -> list[str]:
    """The camera profiles tried (the chosen one ships in the model file) and how the fires were judged."""
    lines = []
    if student.get("judged_by_frame_labels"):
        lines += ["", f"{student['judged_by_frame_labels']} fire sequence(s) carry no box or smoke region: any alarm "
                  "after onset counted as finding the fire there (frame labels alone)."]  # fmt: skip
    profiles = section.get("profiles") or []
    if len(profiles) > 1:
        lines += ["", "| camera profile (student) | rule | fires found | median minutes | false alarms / camera-day | "
                  "input Mpx / frame | ms / frame |", "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        lines += [
            f"| {p['profile_text']} | {p['rule_text']} | {_fmt(p['recall'])} | "
            f"{_fmt(p['median_minutes_to_detection'], 1)} | {_fmt(p['false_alarms_per_camera_day'], 2)} | "
            f"{p['input_megapixels_per_frame']:.2f} | {p['ms_per_frame']:.0f} |"
            for p in profiles
        ]
    return lines


def _robustness_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    clean = section["clean"]
    lines = [
        "",
        f"## Robustness: recall under what camera pipelines do to frames (conf {section['conf']:g}, "
        f"{section['objects']} objects)",
        "",
        "| frames | teacher recall | retention | student recall | retention |",
        "|---|---:|---:|---:|---:|",
        f"| as stored | {_fmt(clean['teacher'])} | – | {_fmt(clean['student'])} | – |",
    ]
    for name, row in section["perturbed"].items():
        t, s = row["teacher"], row["student"]
        lines.append(
            f"| {name} | {_fmt(t['recall'])} | {_fmt(t['retention'])} | {_fmt(s['recall'])} | {_fmt(s['retention'])} |"
        )
    return lines


def chart(result: ValidationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t, s = result.teacher, result.student
    fig, (left, right, sizes, path_panel) = plt.subplots(1, 4, figsize=(20, 4), constrained_layout=True)
    width = 0.38
    overall = [*ACCURACY, "agreement"]
    tv = [getattr(t, k) for k in ACCURACY] + [1.0]
    sv = [getattr(s, k) for k in ACCURACY] + [result.teacher_agreement or 0.0]  # undefined: an empty bar
    x = np.arange(len(overall))
    left.bar(x - width / 2, tv, width, label="teacher", color="#c0392b")
    left.bar(x + width / 2, sv, width, label="student", color="#2980b9")
    left.set_xticks(x, [LABELS.get(k, "teacher\nagreement") for k in overall])
    left.set_ylim(0, 1.05)
    left.set_title("overall")
    left.legend()
    x = np.arange(len(result.classes))
    right.bar(x - width / 2, [t.per_class[c]["map50"] or 0 for c in result.classes], width, color="#c0392b")
    right.bar(x + width / 2, [s.per_class[c]["map50"] or 0 for c in result.classes], width, color="#2980b9")
    right.set_xticks(x, result.classes)
    right.set_ylim(0, 1.05)
    right.set_title("mAP50 per class")
    camera = result.camera_figures or {}
    if camera:
        buckets = ["small", "medium", "large"]
        x = np.arange(len(buckets))
        for role, offset, color in (("teacher", -width / 2, "#c0392b"), ("student", width / 2, "#2980b9")):
            sizes.bar(
                x + offset, [camera[role]["recall_by_size"][b]["recall"] or 0 for b in buckets], width, color=color
            )
        sizes.set_xticks(x, buckets)
        sizes.set_ylim(0, 1.05)
        fa = [_fmt(camera[r]["false_alarms_per_1000"], 1) for r in ("teacher", "student")]
        sizes.set_title(f"recall by size at conf {camera['conf']:g}\nfalse alarms / 1000 frames: {fa[0]} vs {fa[1]}")
    _camera_path_panel(path_panel, result, width)
    fig.suptitle(f"student vs teacher: {'passed' if result.passed else 'FAILED'}")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write(result: ValidationResult, out: Path, data: str, settings: ValidateSettings, imgsz: int) -> None:
    """validation.md and validation.png of ``result`` into ``out``."""
    from ..layout import VALIDATION_MD, VALIDATION_PNG

    atomic_write_text(out / VALIDATION_MD, markdown(result, data, settings, imgsz))
    chart(result, out / VALIDATION_PNG)


def _camera_path_panel(axes, result: ValidationResult, width: float) -> None:
    """Sequence recall and the worst robustness retention, both models; minutes and false alarms in the title."""
    import numpy as np

    labels, bars, titles = [], {"teacher": [], "student": []}, []
    if result.sequences:
        labels.append("fire sequences\nfound")
        for role in bars:
            bars[role].append(result.sequences[role]["recall"] or 0)
        s = result.sequences["student"]
        titles.append(f"student: {_minutes(s)} min to alarm, {_fmt(s['false_alarms_per_camera_day'], 2)} FA/camera-day")
    if result.robustness:
        labels.append("worst recall\nretention")
        for role in bars:
            bars[role].append(worst_retention(result.robustness, role) or 0)
    x = np.arange(len(labels))
    for role, offset, color in (("teacher", -width / 2, "#c0392b"), ("student", width / 2, "#2980b9")):
        axes.bar(x + offset, bars[role], width, color=color)
    axes.set_xticks(x, labels)
    axes.set_ylim(0, 1.05)
    axes.set_title("\n".join(titles) or "camera path: no sequences, no robustness")
