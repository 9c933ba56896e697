#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and PyTorch with CUDA: the GPU path in the
# GPU image's versions (tritonkit/versions.py). Runs in a few minutes: the environment's
# onnxruntime against the image's; tiny-llama exported on CUDA in float16 (the fused
# graph) and float32 (auto -> concat), each verified against PyTorch there; a GPU
# repository built from the float16 export; the engine opened as the entry model opens
# it (no CPU fallback), greedy equal to the export's, a decode step timed at positions
# 16 and 1024; transformers' speed beside it; TensorRT where the package is present;
# vLLM's greedy against transformers' where vllm is installed (the second engine).
# Every row says ok, FAIL (with the reason) or skipped; exit 1 when any failed.
#
#   bash scripts/gpu_check.sh                    # with .venv-gpu when present, else python3
#   GPU_CHECK_SETUP=1 bash scripts/gpu_check.sh  # first make .venv-gpu: the machine's CUDA
#                                                # torch + onnxruntime-gpu and the builder
#                                                # at the image's versions (needs PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [[ "${GPU_CHECK_SETUP:-0}" == 1 && ! -x .venv-gpu/bin/python ]]; then
  "$PY" -m venv --system-site-packages .venv-gpu   # keeps the machine's CUDA build of torch
  ort="$("$PY" tritonkit/versions.py ONNXRUNTIME)"
  genai="$("$PY" tritonkit/versions.py ONNXRUNTIME_GENAI_CUDA)"
  .venv-gpu/bin/pip uninstall -q -y onnxruntime onnxruntime-genai 2>/dev/null || true
  .venv-gpu/bin/pip install -q "onnxruntime-gpu==${ort}" "onnxruntime-genai-cuda==${genai}" \
    "transformers>=5.0,<6" "onnx>=1.17,<1.24" onnxscript "ml-dtypes<0.6" tokenizers \
    safetensors "numpy<2" protobuf
fi
if [[ -x .venv-gpu/bin/python ]]; then PY=.venv-gpu/bin/python; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Use this checkout's code without installing it (the GPU machine may be offline):
# tritonkit/ links every package folder, so the checkout itself is importable.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 470 "$PY" scripts/gpu_check.py "$@"
