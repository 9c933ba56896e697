#!/usr/bin/env bash
# Installs what `tritonkit perf` needs beyond the Python extras, idempotently:
#   * Debian's libb64-0d, which the perf_analyzer binary of tritonclient[all]==2.51.0 links
#     (its libcudart.so.12 comes from the nvidia-cuda-runtime-cu12 wheel in .venv);
#   * genai-perf==0.0.16 in its own venv (.venv-genai-perf): it needs numpy>=2, while
#     tritonclient 2.51 and nvidia-pytriton in .venv need numpy<2.
# Called by `make setup`; safe to run again (each step checks first).
#   GENAI_PERF_VENV  where genai-perf goes (default: .venv-genai-perf beside this script's repo)
#   PYTHON           the interpreter that creates it (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GENAI_PERF_VENV:-$ROOT/.venv-genai-perf}"
PYTHON="${PYTHON:-python3}"
GENAI_PERF_VERSION="0.0.16"

# 1. libb64-0d: only when the loader does not already know libb64.so.0d.
if ! ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "install_perf_tools: installing libb64-0d (perf_analyzer needs it)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libb64-0d >/dev/null
fi

# 2. genai-perf in its own venv, with numpy>=2.
if [ -x "$VENV/bin/genai-perf" ] \
    && "$VENV/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('genai-perf') != '$GENAI_PERF_VERSION')" 2>/dev/null; then
    exit 0
fi
echo "install_perf_tools: installing genai-perf==$GENAI_PERF_VERSION in $VENV" >&2
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "genai-perf==$GENAI_PERF_VERSION" "numpy>=2"
"$VENV/bin/genai-perf" --version >/dev/null
