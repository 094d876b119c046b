"""How many cameras one box serves: `wildfire-kd-edge serve` flat out over folder cameras, per model file.

    .venv/bin/python benchmarks/serve_capacity.py --weights runs/demo/build/train/weights/best.pt --out runs/capacity

Each model (the student exported at each --imgsz, as ONNX and as an OpenVINO folder) serves --cameras folder
cameras whose frames (2048 px tower frames of `synth --sequence`, linked many times under time-stamped names) are all
there from the start, so the service never waits for a camera: its sustained frames per second is what the box can
do, and at one frame per --every seconds per camera it serves fps x every cameras. Measured from the outside, as an
operator would: /metrics for the frames, /proc for the process's CPU and resident memory (after --early and after
--late frames: memory that grows with the frames would show there). Writes RESULTS.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from wildfire_kd.reports import write_markdown


def _export(weights: str, imgsz: int, out: Path) -> dict[str, Path]:
    cmd = [sys.executable, "-m", "wildfire_kd.cli", "export", "--weights", weights, "--imgsz", str(imgsz), "--out",
           str(out), "--formats", "onnx,openvino"]  # fmt: skip
    if not (out / "student.onnx").is_file():
        subprocess.run(cmd, check=True, capture_output=True)
    return {"onnxruntime": out / "student.onnx", "openvino": out / "student_openvino_model"}


def _cameras(root: Path, sources: list[Path], cameras: int, frames: int, tiles: int | None, suffix: str) -> Path:
    """``cameras`` folders of ``frames`` links each, to the sequences' frames, named by increasing unix time;
    ``tiles``: each camera's tiles (None: the model file's camera profile, else auto by the frame's size)."""
    yaml = ["cameras:"]
    for c in range(cameras):
        folder = root / f"cam{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            link = folder / f"{1_700_000_000 + 60 * i}.jpg"
            if not link.exists():
                os.symlink(sources[(c * 7 + i) % len(sources)].resolve(), link)
        yaml += [f"  - id: cam{c}", f"    source: {folder}", "    interval: 0.01", "    backlog: 0"]
        yaml += [f"    tiles: {tiles}"] if tiles is not None else []
    (root / f"cameras{suffix}.yaml").write_text("\n".join(yaml) + "\n")
    return root / f"cameras{suffix}.yaml"


def _frames_done(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("wildfire_frames_total{"))


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds used, resident MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmRSS")) / 1024  # fmt: skip
    return cpu, rss


def measure(model: Path, cameras_yaml: Path, state: Path, args) -> dict:
    port = 9300 + os.getpid() % 500
    cmd = [sys.executable, "-m", "wildfire_kd.edge", "serve", "--cameras", str(cameras_yaml), "--model", str(model),
           "--state", str(state), "--port", str(port)]  # fmt: skip
    service = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    figures: dict = {}
    try:
        while _frames_done(port) < 1:
            assert service.poll() is None, service.stderr.read()[-2000:]
            time.sleep(0.5)
        start, (cpu0, _) = time.monotonic(), _proc(service.pid)
        done0 = _frames_done(port)
        while time.monotonic() - start < args.seconds:
            done = _frames_done(port)
            if done >= args.early and "rss_early_mb" not in figures:
                figures["rss_early_mb"] = _proc(service.pid)[1]
            if done >= args.late and "rss_late_mb" not in figures:
                figures["rss_late_mb"] = _proc(service.pid)[1]
            time.sleep(1.0)
        elapsed, done = time.monotonic() - start, _frames_done(port)
        cpu, rss = _proc(service.pid)
        figures.update(frames=done - done0, seconds=elapsed, fps=(done - done0) / elapsed,
                       cpu_percent=100 * (cpu - cpu0) / elapsed, rss_mb=rss)  # fmt: skip
    finally:
        service.send_signal(signal.SIGTERM)
        figures["exit"] = service.wait(timeout=60)
    figures["cameras_served"] = figures["fps"] * args.every
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/capacity"))
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640, 1024])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long each model serves, flat out")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between two frames of one camera")
    parser.add_argument("--cameras", type=int, default=8, help="folder cameras served at once")
    parser.add_argument("--frames", type=int, default=400, help="frames per camera (more than --seconds can use)")
    parser.add_argument("--early", type=int, default=100, help="resident memory after this many frames ...")
    parser.add_argument("--late", type=int, default=1000, help="... and after this many")
    parser.add_argument("--tiles", type=int, default=None,
                        help="tiles per frame (default: the model file's profile, else auto: a 2048 px frame at 640 "
                        "runs the whole frame and 2 tiles)")  # fmt: skip
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from wildfire_kd.synth_sequences import synthesize_sequences

    if not (out / "sequences").is_dir():
        synthesize_sequences(out / "sequences", 2, 20, 2048)
    sources = sorted(p for p in (out / "sequences").glob("*_0*/*.jpg"))
    suffix = "" if args.tiles is None else f"-tiles{args.tiles}"  # a run with --tiles beside one without
    cameras_yaml = _cameras(out / "cameras", sources, args.cameras, args.frames, args.tiles, suffix)
    results = {}
    for size in args.imgsz:
        files = _export(args.weights, size, out / f"export-{size}")
        for runtime in args.runtimes:
            name = f"{size} px, {runtime}" + ("" if args.tiles is None else f", tiles {args.tiles}")
            print(f"{name} ...", flush=True)
            results[name] = measure(files[runtime], cameras_yaml, out / f"state-{size}-{runtime}{suffix}", args)
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=2))
    rows = [
        f"| {name} | {r['fps']:.2f} | {r['cameras_served']:.0f} | {r['cpu_percent']:.0f} | "
        f"{r.get('rss_early_mb', float('nan')):.0f} | {r.get('rss_late_mb', float('nan')):.0f} | {r['frames']:.0f} |"
        for name, r in results.items()
    ]
    lines = [
        f"{args.cameras} folder cameras of 2048 x 1536 frames, flat out for {args.seconds:.0f} s per model; cameras "
        f"served at one frame per {args.every:g} s = fps x {args.every:g}.",
        "",
        f"| model | frames/s sustained | cameras at 1 frame / {args.every:g} s | CPU % (of one core) | "
        f"RSS MiB after {args.early} frames | after {args.late} | frames |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    print(write_markdown(out / f"RESULTS{suffix}.md", lines))


if __name__ == "__main__":
    main()
