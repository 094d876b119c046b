#!/usr/bin/env bash
# The GPU check, one prepared run (CUDA + AMP have no CPU stand-in):
#   1. a yolov8s teacher trained from scratch on DATA at 640 (no finetuned teacher can be downloaded offline);
#   2. `wildfire-kd build` with the default distillation (train with AMP -> validate -> export fp32/fp16/int8
#      -> parity on real frames);
#   3. benchmarks/distill_compare.py: plain / ultralytics feature KD / dense / pseudo, one seed, same budget:
#      s/epoch, median step, peak GPU memory, mAP.
# Each step has its own time limit so a slow step leaves the others' results; everything lands in OUT.
#
#   scripts/gpu_check.sh [DATA] [OUT]        e.g. scripts/gpu_check.sh ../shared/datasets/fire8/data.yaml runs/gpu
#   TEACHER_EPOCHS=20 EPOCHS=5 BATCH=32 IMGSZ=640 DEVICE=0 PYTHON=.venv/bin/python scripts/gpu_check.sh ...
set -uo pipefail
data=${1:-../shared/datasets/fire8/data.yaml}
out=${2:-runs/gpu_check}
teacher_epochs=${TEACHER_EPOCHS:-20}
epochs=${EPOCHS:-5}
batch=${BATCH:-32}
imgsz=${IMGSZ:-640}
device=${DEVICE:-0}
py=${PYTHON:-python3}
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 PYTHONUNBUFFERED=1
mkdir -p "$out"
wkd=("$py" -m wildfire_kd.cli)
step() {  # step NAME SECONDS CMD...: run, log, record the exit code and the wall time
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc seconds=$(($(date +%s) - t0))" | tee -a "$out/steps.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch, ultralytics, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'ultralytics', ultralytics.__version__, 'onnxruntime', onnxruntime.__version__)"
} >"$out/env.txt" 2>&1

common=(--imgsz "$imgsz" --batch "$batch" --device "$device" --set train.cache=true --set train.plots=false
    --set train.workers=8 --set validation.min_map50_retention=null)
teacher=$out/teacher/weights/best.pt
[ -f "$out/teacher/train.json" ] || step teacher 150 "${wkd[@]}" train --data "$data" --student yolov8s.yaml \
    --epochs "$teacher_epochs" --out "$out" --name teacher --set train.exist_ok=true --set distill.response=false \
    "${common[@]}"

step build 150 "${wkd[@]}" build --data "$data" --teacher "$teacher" --out "$out/build" --device "$device" \
    --set train.epochs="$epochs" --set train.imgsz="$imgsz" --set train.batch="$batch" --set train.amp=true \
    --set train.cache=true --set train.plots=false --set train.workers=8 \
    --set export.half="${HALF:-true}" --set export.int8=true --set validation.min_map50_retention=null

step compare 220 "$py" benchmarks/distill_compare.py --data "$data" --teacher "$teacher" --imgsz "$imgsz" \
    --epochs "$epochs" --batch "$batch" --device "$device" --optimizer SGD --lr0 0.01 \
    --only a_none,b_feature,d_dense --out "$out/compare"
cat "$out/steps.txt"
