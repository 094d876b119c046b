"""Camera throughput: `wildfire-kd detect`'s runtime end to end against ultralytics' ONNX predictor, same files.

    .venv/bin/python benchmarks/detect_speed.py --weights RUN/weights/best.pt --data DATA.yaml --out runs/speed

Exports the student at each --imgsz (fp32 and int8, int8 calibrated on the val images of --data), then for each
file runs both on the same JPEG files (--images, default: the val images of --data): ours split into decode
(cv2.imread), letterbox, inference and decoding + NMS; ultralytics as `YOLO("student.onnx").predict(file)`.
Both use onnxruntime's default threads. Median milliseconds per frame after a warm-up; RESULTS.md and
results.json into --out.
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


def _ours(model, files: list[Path], conf: float, iou: float) -> dict[str, float]:
    import cv2

    from wildfire_kd.edge.boxes import decode
    from wildfire_kd.edge.letterbox import letterbox

    parts: dict[str, list[float]] = {"decode": [], "letterbox": [], "inference": [], "nms": []}
    for f in files:
        t0 = time.perf_counter()
        image = cv2.imread(str(f))
        t1 = time.perf_counter()
        tensor, _, _ = letterbox(image, model.imgsz)
        t2 = time.perf_counter()
        output = model.infer(tensor)
        t3 = time.perf_counter()
        decode(output, conf, iou)  # the rescale to frame pixels is a few multiplications: inside "nms" in detect()
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[key].append(dt * 1000)
    return {k: statistics.median(v) for k, v in parts.items()}


def _ultralytics(onnx_path: Path, files: list[Path], imgsz: int, conf: float, iou: float) -> float:
    from ultralytics import YOLO

    model = YOLO(str(onnx_path), task="detect")
    times = []
    for f in files:
        t0 = time.perf_counter()
        model.predict(str(f), imgsz=imgsz, conf=conf, iou=iou, verbose=False)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a trained student .pt (detections make NMS real work)")
    parser.add_argument("--data", required=True, help="data.yaml: int8 calibration and (default) the frames")
    parser.add_argument("--images", default=None, help="folder of frames to time (default: the val images)")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--frames", type=int, default=60, help="frames timed (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=Path("runs/speed"))
    args = parser.parse_args()

    from wildfire_kd.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    import onnxruntime as ort

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.data import split_images
    from wildfire_kd.edge.letterbox import IMAGE_SUFFIXES
    from wildfire_kd.edge.model import CameraModel
    from wildfire_kd.export import export

    if args.images:
        files = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = split_images(args.data, "val")
    files = (files * (1 + (args.frames + args.warmup) // len(files)))[: args.frames + args.warmup]
    rows = []
    for imgsz in args.imgsz:
        result = export(args.weights, args.out / f"onnx{imgsz}", ExportSettings(int8=True), imgsz=imgsz, data=args.data)
        for variant in ("fp32", "int8"):
            path = Path(result.file(variant).path)
            model = CameraModel(path)
            _ours(model, files[: args.warmup], args.conf, args.iou)
            ours = _ours(model, files[args.warmup :], args.conf, args.iou)
            _ultralytics(path, files[: args.warmup], imgsz, args.conf, args.iou)
            theirs = _ultralytics(path, files[args.warmup :], imgsz, args.conf, args.iou)
            total = sum(ours.values())
            rows.append(
                {
                    "imgsz": imgsz,
                    "variant": variant,
                    "ours_ms": ours,
                    "ours_total_ms": total,
                    "non_inference_share": (total - ours["inference"]) / total,
                    "ultralytics_ms": theirs,
                    "speedup": theirs / total,
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__} "
        f"(default threads); {args.frames} frames of `{files[0].parent}` after {args.warmup} warm-up; conf "
        f"{args.conf}, IoU {args.iou}; median ms per frame.",
        "",
        "| imgsz | file | decode | letterbox | inference | NMS | detect total | non-inference | "
        "ultralytics predict | detect vs ultralytics |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o = r["ours_ms"]
        lines.append(
            f"| {r['imgsz']} | {r['variant']} | {o['decode']:.2f} | {o['letterbox']:.2f} | "
            f"{o['inference']:.2f} | {o['nms']:.2f} | {r['ours_total_ms']:.2f} | "
            f"{r['non_inference_share']:.0%} | {r['ultralytics_ms']:.2f} | {r['speedup']:.2f}x |"
        )
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
