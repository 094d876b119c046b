"""Camera throughput per runtime: `wildfire-kd detect`'s camera path end to end in onnxruntime, OpenVINO and NCNN,
each beside ultralytics' own predictor on the same file; and what each precision keeps of the fp32 model.

    .venv/bin/python benchmarks/detect_speed.py --weights RUN/weights/best.pt --data DATA.yaml \\
        --images ../shared/datasets/fire8/images/val --out runs/speed

Exports the student at each --imgsz in every format and precision (`export.formats=[onnx, openvino, ncnn]`, half and
int8, int8 calibrated on the val images of --data), then runs each file over the same JPEG files (--images, default:
the val images of --data): ours through `CameraModel` (decode with OpenCV, letterbox, inference, decode + NMS) with
--threads, ultralytics as `YOLO(file).predict(path)`. Median milliseconds per frame after a warm-up, frames per
second, and per file what the camera gets, through CameraModel: mAP50 and the recall of small objects on the val
split of --data, and the recall of a distant plume in its first --plume-minutes on tower-camera sequences (--sequences,
default: 6 synthesized at 2048 px), each with its drop or retention against the fp32 ONNX file. RESULTS.md,
results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from wildfire_kd.reports import write_markdown

SMALL_AREA = 0.0025  # validation.small_area: objects under 0.25% of the frame (32 x 32 px at 640)


def _ours_once(model, path: Path, conf: float, iou: float) -> dict[str, float]:
    """One frame through the camera path, each step timed (ms)."""
    import cv2

    from wildfire_kd.edge.boxes import decode
    from wildfire_kd.edge.letterbox import letterbox

    t0 = time.perf_counter()
    image = cv2.imread(str(path))
    t1 = time.perf_counter()
    tensor, _, _ = letterbox(image, model.imgsz)
    t2 = time.perf_counter()
    output = model.infer(tensor)
    t3 = time.perf_counter()
    decode(output, conf, iou)  # the rescale to frame pixels is a few multiplications: inside "nms" in detect()
    t4 = time.perf_counter()
    parts = dict(zip(("decode", "letterbox", "inference", "nms"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))
    return {key: dt * 1000 for key, dt in parts.items()}


def _timed_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def _side_by_side(model, theirs, reference, files: list[Path], args, imgsz: int) -> dict:
    """Ours, ultralytics on the same file and ultralytics on the fp32 ONNX file, one after the other over the same
    frames (each block with its warm-up), so that the reference is timed within seconds of the file it is compared
    with (the VM has neighbours: minutes apart, timings drift by 25%). Not frame by frame: onnxruntime's threads
    spin after a run, and alternating three sessions on two cores slowed each by up to 2x. Medians after warm-up."""
    runners = {
        "ours": lambda f: _ours_once(model, f, args.conf, args.iou),
        "theirs": lambda f: _timed_ms(lambda: theirs.predict(str(f), imgsz=imgsz, conf=args.conf, iou=args.iou,
                                                             verbose=False)),
        "reference": lambda f: _timed_ms(lambda: reference.predict(str(f), imgsz=imgsz, conf=args.conf,
                                                                   iou=args.iou, verbose=False)),
    }  # fmt: skip
    times: dict[str, list] = {name: [] for name in runners}
    for name, runner in runners.items():
        for i, f in enumerate(files):
            result = runner(f)
            if i >= args.warmup:
                times[name].append(result)
    parts = {key: statistics.median(t[key] for t in times["ours"]) for key in times["ours"][0]}
    return {
        "ours_ms": parts,
        "ours_total_ms": statistics.median(sum(t.values()) for t in times["ours"]),
        "ultralytics_ms": statistics.median(times["theirs"]),
        "ultralytics_onnx_fp32_ms": statistics.median(times["reference"]),
    }


def _accuracy(model, data: str) -> dict[str, float | None]:
    """What a camera gets from this file: mAP50 on the val split through the camera path (CameraModel at conf 0.001,
    ultralytics' AP, greedy matching at IoU 0.5 per class), and the recall of small objects at conf 0.25. The camera
    path, not ultralytics' predictor: ultralytics runs any OpenVINO IR in the CPU's default precision (bf16 where
    the CPU has it), so its figure for an fp32 IR would be a bf16 one."""
    import cv2
    import numpy as np
    from ultralytics.utils.metrics import ap_per_class

    from wildfire_kd.data import label_path, split_images
    from wildfire_kd.edge.boxes import box_iou

    tps, confs, classes, targets = [], [], [], []
    small_found = small_total = 0
    for image_path in split_images(data, "val"):
        label = label_path(image_path)
        rows = [r.split() for r in label.read_text().splitlines() if r.strip()] if label.is_file() else []
        image = cv2.imread(str(image_path))
        h, w = image.shape[:2]
        gt = np.array([[float(v) for v in r[:5]] for r in rows]).reshape(-1, 5)
        gt_boxes = np.stack(
            [(gt[:, 1] - gt[:, 3] / 2) * w, (gt[:, 2] - gt[:, 4] / 2) * h,
             (gt[:, 1] + gt[:, 3] / 2) * w, (gt[:, 2] + gt[:, 4] / 2) * h], axis=1,
        )  # fmt: skip
        targets += gt[:, 0].astype(int).tolist()
        dets = sorted(model.detect(image, conf=0.001), key=lambda d: -d.confidence)
        taken = np.zeros(len(gt), bool)
        for d in dets:
            iou = box_iou(np.array([d.box]), gt_boxes)[0] if len(gt) else np.zeros(0)
            iou[(gt[:, 0] != d.class_id) | taken] = 0
            hit = len(iou) and iou.max() >= 0.5
            if hit:
                taken[iou.argmax()] = True
            tps.append(bool(hit))
            confs.append(d.confidence)
            classes.append(d.class_id)
        small = gt[:, 3] * gt[:, 4] < SMALL_AREA
        if small.any():
            sure = np.array([d.box for d in dets if d.confidence >= 0.25]).reshape(-1, 4)
            sure_cls = np.array([d.class_id for d in dets if d.confidence >= 0.25])
            for box, cls in zip(gt_boxes[small], gt[small, 0], strict=True):
                same = sure[sure_cls == cls]
                small_total += 1
                small_found += bool(len(same) and (box_iou(box[None], same) >= 0.5).any())
    ap = ap_per_class(np.array(tps)[:, None], np.array(confs), np.array(classes), np.array(targets))[5]
    return {
        "map50": float(ap[:, 0].mean()) if len(ap) else 0.0,
        "small_recall": small_found / small_total if small_total else None,
    }


def _plume_recall(model, sequences, conf: float, minutes: float) -> float | None:
    """The distant plume: frames within ``minutes`` of onset on tower-camera sequences in which a detection touches
    it (the camera path on the whole 2048 px frame, as `detect` runs)."""
    from dataclasses import replace

    from wildfire_kd.edge.sequence_figures import detections_of, early_plume_recall

    # only the frames the figure counts go through the model
    early = [
        replace(s, frames=[f for f in s.frames if f.smoke and f.time - s.onset < minutes * 60])
        for s in sequences
        if s.positive
    ]
    return early_plume_recall(early, detections_of(model, early, conf=conf, iou=0.7), minutes)


def _measure(f, reference, files, sequences, args, imgsz: int) -> dict:
    from ultralytics import YOLO

    from wildfire_kd.edge.model import CameraModel

    path = Path(f.path)
    model = CameraModel(path, threads=args.threads)
    timing = _side_by_side(model, YOLO(str(path), task="detect"), reference, files, args, imgsz)
    total = timing["ours_total_ms"]
    return {
        "imgsz": imgsz,
        "format": f.format,
        "variant": f.variant,
        **timing,
        "fps": 1000 / total,
        "vs_ultralytics_same_file": timing["ultralytics_ms"] / total,
        "vs_ultralytics_onnx_fp32": timing["ultralytics_onnx_fp32_ms"] / total,
        **_accuracy(model, args.data),
        "plume_recall": _plume_recall(model, sequences, args.conf, args.plume_minutes),
    }


def _retention(rows: list[dict]) -> None:
    """Each row's mAP50 drop and small-object recall retention against the fp32 ONNX file at its size, and its
    speed (measured beside it) against ultralytics' ONNX predictor on the fp32 file."""
    for r in rows:
        ref = next(x for x in rows if x["imgsz"] == r["imgsz"] and x["format"] == "onnx" and x["variant"] == "fp32")
        r["map50_drop"] = ref["map50"] - r["map50"]
        small, base = r["small_recall"], ref["small_recall"]
        r["small_recall_retention"] = small / base if small is not None and base else None
        plume, base = r["plume_recall"], ref["plume_recall"]
        r["plume_recall_retention"] = plume / base if plume is not None and base else None


def _fmt(v, spec: str) -> str:
    return "–" if v is None else f"{v:{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a trained student .pt (detections make NMS real work)")
    parser.add_argument("--data", required=True, help="data.yaml: int8 calibration, mAP50, small objects, frames")
    parser.add_argument("--images", default=None, help="folder of frames to time (default: the val images)")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640, 1024])
    parser.add_argument("--frames", type=int, default=40, help="frames timed (after --warmup)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=Path("runs/speed"))
    parser.add_argument("--sequences", type=Path, default=None, help="tower-camera sequences (default: synthesize 6)")
    parser.add_argument("--sequence-width", type=int, default=2048, help="the synthesized sequences' frame width")
    parser.add_argument("--plume-minutes", type=float, default=10.0, help="a plume counts as small this long")
    args = parser.parse_args()

    from wildfire_kd.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.data import split_images
    from wildfire_kd.edge.letterbox import IMAGE_SUFFIXES
    from wildfire_kd.edge.sequences import load_sequences
    from wildfire_kd.export import export

    if args.images:
        files = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = split_images(args.data, "val")
    files = (files * (1 + (args.frames + args.warmup) // len(files)))[: args.frames + args.warmup]
    folder = args.sequences
    if folder is None:
        from wildfire_kd.synth_sequences import synthesize_sequences

        folder = args.out / "sequences"
        synthesize_sequences(folder, 6, 40, args.sequence_width, force=True)
    sequences = load_sequences(folder)
    settings = ExportSettings(formats=["onnx", "openvino", "ncnn"], half=True, int8=True)
    rows = []
    for imgsz in args.imgsz:
        result = export(args.weights, args.out / f"models{imgsz}", settings, imgsz=imgsz, data=args.data)
        reference = YOLO(str(next(f.path for f in result.files if f.format == "onnx" and f.variant == "fp32")))
        for f in result.files:
            print(f"{imgsz} {f.format} {f.variant} ...", flush=True)
            rows.append(_measure(f, reference, files, sequences, args, imgsz))
    _retention(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    import cv2
    import ncnn
    import onnxruntime
    import openvino

    lines = [
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
        f"onnxruntime {onnxruntime.__version__}, OpenVINO {openvino.__version__}, NCNN {ncnn.__version__}, "
        f"OpenCV {cv2.__version__}; {args.frames} frames of `{files[0].parent}` after {args.warmup} warm-up; "
        "median ms per frame, end to end.",
        "",
        "| imgsz | format | precision | decode | letterbox | inference | NMS | total | fps | ultralytics, same file | "
        "vs ultralytics same file | vs ultralytics ONNX fp32 | mAP50 | drop vs ONNX fp32 | small objects (val): "
        f"recall retention | plume in its first {args.plume_minutes:g} min: recall | retention |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o = r["ours_ms"]
        lines.append(
            f"| {r['imgsz']} | {r['format']} | {r['variant']} | {o['decode']:.1f} | {o['letterbox']:.1f} | "
            f"{o['inference']:.1f} | {o['nms']:.1f} | {r['ours_total_ms']:.1f} | {r['fps']:.1f} | "
            f"{r['ultralytics_ms']:.1f} | {r['vs_ultralytics_same_file']:.2f}x | "
            f"{r['vs_ultralytics_onnx_fp32']:.2f}x | "
            f"{r['map50']:.4f} | {r['map50_drop']:+.4f} | {_fmt(r['small_recall_retention'], '.3f')} | "
            f"{_fmt(r['plume_recall'], '.3f')} | {_fmt(r['plume_recall_retention'], '.3f')} |"
        )
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
