#!/usr/bin/env bash
# The project's GPU checks in one run (4.5 min on one H200 on 2026-12-04): the CUDA tests
# (tests/test_cuda.py), bench_full.py's CUDA table, and the demo study end to end on the `full`
# architectures with random weights on CUDA through the CLI (train-clip: CLIP ViT-B/16 in fp16
# as released, fresh views; train-ma: semantic vectors from the tiny random mPLUG-Owl2, ViT-B/8
# fine-tuned; score with both checkpoints). Shortened schedules (10 CLIP-AGIQA epochs, 2 MA
# epochs, two variants): this checks the CUDA paths and times them, it reproduces nothing.
#
#   benchmarks/cuda_check.sh OUT_DIR [PYTHON]
#
# Writes OUT_DIR/steps.txt (one line per step: exit status, wall seconds), a log per step,
# the study's results.jsonl; caches and checkpoints go to a temp folder.
set -uo pipefail
out=${1:?usage: benchmarks/cuda_check.sh OUT_DIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out"
work=$(mktemp -d)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export AGIQA_CACHE_DIR="$work/cache"
study=(--profile full --weights random --device cuda --out-dir "$work/study"
       --results "$work/study/results.jsonl" --no-progress)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, one line in steps.txt
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc wall=$(($(date +%s) - start))s" | tee -a "$out/steps.txt"
  tail -n 20 "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/steps.txt"
"$py" -c "import torch; print('torch', torch.__version__, torch.version.cuda)" >>"$out/steps.txt"
step tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step bench_full 170 "$py" benchmarks/bench_full.py --device cuda --n 256
step train_clip 150 "$py" -m agiqa_lib.cli train-clip demo "${study[@]}" --epochs 10
step train_ma 170 "$py" -m agiqa_lib.cli train-ma demo "${study[@]}" --epochs 2 \
  --variants maniqa released_gate
images=$(dirname "$(find "$AGIQA_CACHE_DIR" -name '*.png' -o -name '*.jpg' | head -n 1)")
# score the demo's images with every checkpoint the two trainings saved
step score 120 bash -c 'for c in "$0"/*.safetensors; do echo "== $c"
  "$1" -m agiqa_lib.cli score "$2" --checkpoint "$c" --device cuda -o "$3" || exit; done' \
  "$work/study/checkpoints" "$py" "$images" "$work/scores.csv"
cp "$work/study/results.jsonl" "$out/" 2>/dev/null
rm -rf "$work"
