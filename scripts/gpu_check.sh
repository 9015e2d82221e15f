#!/usr/bin/env bash
# GPU check of the model stages (issue 23), for a machine with one GPU: builds the full
# Qwen3-VL-4B architecture from its config with random weights (~9 GB of safetensors in a
# temporary folder), loads it with the pipeline's loader, and times the caption backends on
# 512 GPIC-sized photos at GPIC's budgets (transformers; vLLM when installed), the current
# caption path on 64 of them, and the judge. Prints images/s per GPU against GPIC's anchor
# (18.5 images/s: ~1,500 H100-hours for 100M images) and the target (37); the last line is
# key=value figures, also written to $OUT/gpu_check.json when $OUT is set.
#
# About 5 to 8 minutes on an H100/H200 (random weights decode every budget to its end).
# Sizes: GPIC_GPU_CHECK_IMAGES (512), _BATCH (64), _BASELINE_IMAGES (64), _JUDGE_BATCH (64).
# CPU dry run of the same steps on the proportional tiny model: GPIC_GPU_CHECK_TINY=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
    echo "gpu_check: $PY lacks torch or transformers (pip install -e . first)" >&2
    exit 2
fi
if [ "${GPIC_GPU_CHECK_TINY:-0}" != 1 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
exec "$PY" -m gpic.bench.gpu_check
