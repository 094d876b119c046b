"""Making int8 pay off: each way of quantizing the student, its onnxruntime latency and its mAP50 against fp32.

    .venv/bin/python benchmarks/int8_attempts.py --weights RUN/weights/best.pt --data DATA.yaml --imgsz 640

Exports fp32 once, then one int8 file per attempt (export.int8_op_types, calibration method), and times each on
the same tensor (batch 1, median of --runs after a warm-up, onnxruntime's default threads); mAP50 on the val
split through ultralytics' validator, as `parity` judges int8. RESULTS.md and results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from wildfire_kd.reports import write_markdown
from wildfire_kd.ultralytics_env import prepare_ultralytics

ATTEMPTS = {
    "conv only (the default before)": {"int8_op_types": ["Conv", "MatMul", "Gemm"]},
    "conv + SiLU (Sigmoid, Mul)": {"int8_op_types": ["Conv", "MatMul", "Gemm", "Sigmoid", "Mul"]},
    "conv + SiLU + neck (Add, Concat, MaxPool, Resize, Split; export default)": {
        "int8_op_types": ["Conv", "MatMul", "Gemm", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Split"]
    },
    "conv, percentile calibration": {
        "int8_op_types": ["Conv", "MatMul", "Gemm"],
        "int8_calibration_method": "percentile",
    },
}


def _median_ms(session, x, warmup: int, runs: int) -> float:
    feed = {session.get_inputs()[0].name: x}

    def once() -> float:
        t0 = time.perf_counter()
        session.run(None, feed)
        return (time.perf_counter() - t0) * 1000

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a trained student .pt")
    parser.add_argument("--data", required=True, help="data.yaml: calibration images, and the val split for mAP50")
    parser.add_argument("--imgsz", type=int, default=640, help="static input size of every file")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per file (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--out", type=Path, default=Path("runs/int8"), help="RESULTS.md, results.json and the files")
    args = parser.parse_args()

    prepare_ultralytics()
    import numpy as np
    import onnxruntime as ort

    from wildfire_kd.config import ExportSettings
    from wildfire_kd.export import export
    from wildfire_kd.parity import onnx_map50

    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    fp32 = export(args.weights, args.out / "fp32", ExportSettings(), imgsz=args.imgsz).file("fp32").path
    rows = [{"attempt": "fp32", "file": fp32}]
    for name, settings in ATTEMPTS.items():
        folder = args.out / f"int8_{len(rows)}"
        result = export(args.weights, folder, ExportSettings(int8=True, **settings), imgsz=args.imgsz, data=args.data)
        rows.append({"attempt": name, "file": result.file("int8").path, "settings": settings})
    for row in rows:
        session = ort.InferenceSession(row["file"], providers=["CPUExecutionProvider"])
        row["median_ms"] = _median_ms(session, x, args.warmup, args.runs)
        row["map50"] = onnx_map50(row["file"], args.data, args.imgsz)
        row["size_mb"] = round(Path(row["file"]).stat().st_size / 2**20, 2)
    base = rows[0]
    lines = [
        f"imgsz {args.imgsz}, batch 1, onnxruntime {ort.__version__} (default threads), median of {args.runs}; "
        f"mAP50 on the val split of `{args.data}`.",
        "",
        "| file | MB | median ms | speed vs fp32 | mAP50 | Δ mAP50 vs fp32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = base["median_ms"] / r["median_ms"]
        lines.append(
            f"| {r['attempt']} | {r['size_mb']} | {r['median_ms']:.2f} | {speed:.2f}x | {r['map50']:.4f} | "
            f"{r['map50'] - base['map50']:+.4f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    print(write_markdown(args.out / "RESULTS.md", lines))


if __name__ == "__main__":
    main()
