"""Which onnxruntime can load a graph, and whether this environment's onnxruntime is sound.

``min_onnxruntime(model)`` reads what a graph uses and returns the oldest onnxruntime
whose schemas accept it. The rules come from onnxruntime's own schemas, release by
release (each checked by loading graphs in that release's wheel; ``tests/test_gpu_path.py``
loads every graph kind in the pinned version and in the one just below the claimed
minimum, where it must fail):

    ai.onnx opset 22                                   1.21  (1.20: "till opset 21")
    ai.onnx opset 23 (Attention, RotaryEmbedding)      1.23
    com.microsoft GroupQueryAttention, 10-11 inputs    1.22  (position_ids, attention_bias)
    com.microsoft GroupQueryAttention, 12 inputs       1.23  (head_sink)
    com.microsoft GroupQueryAttention, 13-14 inputs    1.25  (k_scale, v_scale)
    com.microsoft GroupQueryAttention, 15-16 inputs    1.31
    com.microsoft GatherBlockQuantized with ``bits``   1.23

Anything older than ``FLOOR`` is not considered (tritonkit needs 1.20 anyway), and an
opset newer than the table knows is reported as ``UNKNOWN`` so a build refuses it.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from tritonkit.versions import version_tuple

FLOOR = "1.20"
UNKNOWN = "unknown"
_OPSET = {22: "1.21", 23: "1.23"}  # ai.onnx opset -> first onnxruntime that runs it
_KNOWN_OPSET = 23
_GQA_INPUTS = ((11, "1.22"), (12, "1.23"), (14, "1.25"), (16, "1.31"))  # (up to n, version)


def min_onnxruntime(model: Any) -> str:
    """The oldest onnxruntime that loads ``model`` (an ``onnx.ModelProto``), as ``"1.23"``;
    ``UNKNOWN`` for an opset or op signature newer than this table."""
    needed = [FLOOR]
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if opset.version > _KNOWN_OPSET:
                return UNKNOWN
            needed += [v for k, v in _OPSET.items() if opset.version >= k]
    for node in model.graph.node:
        if node.domain != "com.microsoft":
            continue
        if node.op_type == "GroupQueryAttention" and len(node.input) > 9:
            found = next((v for n, v in _GQA_INPUTS if len(node.input) <= n), None)
            if found is None:
                return UNKNOWN
            needed.append(found)
        if node.op_type == "GatherBlockQuantized" and any(a.name == "bits" for a in node.attribute):
            needed.append("1.23")
    return max(needed, key=version_tuple)


def graph_min_onnxruntime(path: str | Path) -> str:
    """``min_onnxruntime`` of the graph file at ``path`` (its weights are not read).

    Raises:
        OSError: the file cannot be read.
        onnx.onnx_cpp2py_export.checker.ValidationError: it is not an ONNX model.
    """
    import onnx

    return min_onnxruntime(onnx.load(str(path), load_external_data=False))


# The builds of onnxruntime itself, which all install the same ``onnxruntime/`` folder
# (add-ons such as onnxruntime-extensions or onnxruntime-genai are not builds).
ONNXRUNTIME_BUILDS = frozenset(
    {
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-directml",
        "onnxruntime-openvino",
        "onnxruntime-qnn",
        "onnxruntime-rocm",
        "onnxruntime-training",
        "onnxruntime-silicon",
        "onnxruntime-cann",
    }
)


def onnxruntime_distributions() -> list[str]:
    """The onnxruntime builds installed here (``onnxruntime``, ``onnxruntime-gpu``, ...)."""
    found = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ONNXRUNTIME_BUILDS:
            found.add(name)
    return sorted(found)


def onnxruntime_conflict(distributions: list[str]) -> str | None:
    """Why these onnxruntime packages cannot share one environment (None when they can).

    ``onnxruntime`` and ``onnxruntime-gpu`` install into the same ``onnxruntime/`` folder;
    whichever was installed last wins file by file, and the CUDA provider can vanish
    (onnxruntime's own ``print_debug_info`` warns of this; microsoft/onnxruntime#26996).
    """
    if len(distributions) <= 1:
        return None
    return (
        f"{' and '.join(distributions)} are installed together, which hides the CUDA "
        "provider: keep one (pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
        "'tritonkit[export-gpu]' on a GPU machine or 'tritonkit[export]' elsewhere)"
    )
