"""onnxruntime vs PyTorch CPU latency of the exported student: batch 1, fp32 and int8, median of repeated runs.

    .venv/bin/python benchmarks/onnx_latency.py --imgsz 320 640 --runs 50

Builds a YOLOv8n student (2 classes, from yolov8n.yaml: weights do not change latency), exports it with
`wildfire_kd.export` (fp32 + int8 calibrated on synthetic images) and times the fused PyTorch model and
both ONNX files on the same tensor. Prints a Markdown table; --json writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _median_ms(fn, warmup: int, runs: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from wildfire_kd.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.export import export
    from wildfire_kd.synth import synthesize

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    rows = []
    with tempfile.TemporaryDirectory(prefix="wildfire-kd-bench-") as tmp:
        tmp = Path(tmp)
        model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
        model.names = {0: "smoke", 1: "fire"}
        for imgsz in args.imgsz:
            weights = tmp / f"student{imgsz}.pt"
            torch.save({"model": model.half(), "train_args": {"imgsz": imgsz}}, weights)
            model.float()
            data = synthesize(tmp / f"data{imgsz}", train_images=1, val_images=16, imgsz=imgsz)
            result = export(
                weights, tmp / f"onnx{imgsz}", ExportSettings(int8=True, int8_calibration_images=16), data=str(data)
            )
            x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
            fused = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
            fused.load_state_dict(model.state_dict())
            fused = fused.fuse(verbose=False).eval()
            xt = torch.from_numpy(x)
            torch.set_num_threads(args.threads)  # ultralytics resets it to cpu_count - 1 whenever it selects a device

            def torch_run(m=fused, t=xt):
                with torch.inference_mode():
                    m(t)

            med, p90 = _median_ms(torch_run, args.warmup, args.runs)
            rows.append(
                {
                    "imgsz": imgsz,
                    "runtime": "PyTorch (fused, eager)",
                    "precision": "fp32",
                    "median_ms": med,
                    "p90_ms": p90,
                }
            )
            for variant in ("fp32", "int8"):
                session = ort.InferenceSession(result.file(variant).path, options, providers=["CPUExecutionProvider"])
                name = session.get_inputs()[0].name
                med, p90 = _median_ms(lambda s=session, n=name, a=x: s.run(None, {n: a}), args.warmup, args.runs)
                rows.append(
                    {
                        "imgsz": imgsz,
                        "runtime": "onnxruntime CPU",
                        "precision": variant,
                        "median_ms": med,
                        "p90_ms": p90,
                        "size_mb": result.file(variant).size_mb,
                    }
                )

    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}; batch 1, median of {args.runs} runs "
        f"after {args.warmup} warm-up\n"
    )
    print("| imgsz | runtime | precision | median ms | p90 ms | vs PyTorch fp32 |")
    print("|---:|---|---|---:|---:|---:|")
    for row in rows:
        base = next(r["median_ms"] for r in rows if r["imgsz"] == row["imgsz"] and r["runtime"].startswith("PyTorch"))
        print(
            f"| {row['imgsz']} | {row['runtime']} | {row['precision']} | {row['median_ms']:.2f} | "
            f"{row['p90_ms']:.2f} | {base / row['median_ms']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
