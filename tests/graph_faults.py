"""Faults written into an exported ONNX graph, to show that verification catches them.

Each takes the path of a ``model.onnx`` (its external data next to it) and rewrites it
in place (weights inline):
* ``perturb_weight``: one weight matrix moved by ``eps`` (every element, random sign);
* ``wrong_rope_base`` / ``_fused``: the rotary frequencies recomputed for another base
  (the concat graph's ``inv_freq``; the fused graph's ``cos_cache`` and ``sin_cache``);
* ``swap_kv_heads`` / ``_fused``: the first two KV heads of the first key projection
  swapped (the concat graph's key projection; the key columns of the fused QKV one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _edit(path: Path, name: str, change) -> None:
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if tensor.name == name:
            array = change(numpy_helper.to_array(tensor).copy())
            tensor.CopyFrom(numpy_helper.from_array(array, name))
            onnx.save(model, str(path))
            return
    raise LookupError(f"no initializer {name!r} in {path}")


def _matmul_weights(path: Path) -> list[onnx.TensorProto]:
    """The 2-D initializers that feed a MatMul, in graph order."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer if len(t.dims) == 2}
    seen, out = set(), []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            for name in node.input:
                if name in inits and name not in seen:
                    seen.add(name)
                    out.append(inits[name])
    return out


def perturb_weight(path: Path, eps: float = 1e-2, index: int = 0) -> str:
    """Add ``±eps`` to every element of the ``index``-th MatMul weight; returns its name."""
    name = _matmul_weights(path)[index].name
    rng = np.random.default_rng(0)
    _edit(path, name, lambda w: w + (eps * rng.choice([-1, 1], size=w.shape)).astype(w.dtype))
    return name


def perturb_element(path: Path, eps: float = 1e-2, index: int = 0) -> str:
    """Add ``eps`` to one element of the ``index``-th MatMul weight."""
    name = _matmul_weights(path)[index].name

    def change(w):
        w[0, 0] += eps
        return w

    _edit(path, name, change)
    return name


def wrong_rope_base(path: Path, base: float, head_dim: int) -> None:
    """Recompute the rotary ``inv_freq`` for ``base`` (the model's own is another)."""
    model = onnx.load(str(path), load_external_data=False)
    name = next(t.name for t in model.graph.initializer if t.name.endswith("inv_freq"))
    exponent = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    _edit(path, name, lambda f: (1.0 / base**exponent).astype(f.dtype))


def swap_kv_heads(path: Path, hidden: int, kv_heads: int, head_dim: int) -> str:
    """Swap KV heads 0 and 1 in the first key projection ((hidden, kv*hd) after transpose)."""
    weight = next(w for w in _matmul_weights(path) if list(w.dims) == [hidden, kv_heads * head_dim])

    def change(w):
        first = w[:, :head_dim].copy()
        w[:, :head_dim] = w[:, head_dim : 2 * head_dim]
        w[:, head_dim : 2 * head_dim] = first
        return w

    _edit(path, weight.name, change)
    return weight.name


# ---- the same faults in a fused-attention graph (onnxruntime-genai's builder) -------------


def wrong_rope_base_fused(path: Path, base: float) -> None:
    """Recompute the rotary ``cos_cache``/``sin_cache`` (max_positions, rot/2) for ``base``."""
    model = onnx.load(str(path))
    tables = {t.name: t for t in model.graph.initializer if t.name in ("cos_cache", "sin_cache")}
    cos = numpy_helper.to_array(tables["cos_cache"])
    positions, half = cos.shape
    inv = 1.0 / base ** (np.arange(0, 2 * half, 2, dtype=np.float64) / (2 * half))  # (half,)
    angles = np.outer(np.arange(positions), inv)  # (positions, half)
    for name, fn in (("cos_cache", np.cos), ("sin_cache", np.sin)):
        array = fn(angles).astype(cos.dtype)
        tables[name].CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(path))


def swap_kv_heads_fused(path: Path, num_heads: int, kv_heads: int, head_dim: int) -> str:
    """Swap KV heads 0 and 1 among the key columns of the first fused QKV projection,
    shaped (hidden, (num_heads + 2 * kv_heads) * head_dim): [q | k | v] along columns."""
    width = (num_heads + 2 * kv_heads) * head_dim
    weight = next(w for w in _matmul_weights(path) if w.dims[-1] == width)
    k0 = num_heads * head_dim  # first key column

    def change(w):
        first = w[:, k0 : k0 + head_dim].copy()
        w[:, k0 : k0 + head_dim] = w[:, k0 + head_dim : k0 + 2 * head_dim]
        w[:, k0 + head_dim : k0 + 2 * head_dim] = first
        return w

    _edit(path, weight.name, change)
    return weight.name


def copy_export(export: Path, folder: Path) -> Path:
    """``model.onnx`` (and its external data) copied into ``folder``; returns the graph."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.onnx.data"):
        if (export / name).is_file():
            shutil.copyfile(export / name, folder / name)
    return folder / "model.onnx"


def _nbits_nodes(path: Path) -> list[onnx.NodeProto]:
    model = onnx.load(str(path), load_external_data=False)
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def scale_quantized_weight(path: Path, factor: float, index: int = 0) -> str:
    """Multiply the block scales of the ``index``-th 4-bit weight (MatMulNBits input 2)
    by ``factor``, as a quantizer that got one layer's scales wrong would; returns it."""
    node = [n for n in _nbits_nodes(path) if _attr(n, "bits") == 4][index]
    _edit(path, node.input[2], lambda s: (s * factor).astype(s.dtype))
    return node.name


def _attr(node: onnx.NodeProto, name: str) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return None
