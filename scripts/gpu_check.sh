#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and PyTorch with CUDA (no Docker, no
# TensorRT and no onnxruntime-gpu needed). Runs in a few minutes:
#   export tiny-llama on the GPU in float32 and float16, verified against PyTorch there;
#   greedy parity; transformers generate on the GPU vs the onnxruntime KV loop; with
#   onnxruntime-gpu, the fused-attention graph in float16 verified on the GPU through the
#   serving engine's KV rows and a decode step timed at positions 16 and 1024; and says
#   plainly what it could not run. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Use this checkout's code without installing it (the GPU machine may be offline):
# tritonkit/ links every package folder, so the checkout itself is importable.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 470 "$PY" scripts/gpu_check.py
