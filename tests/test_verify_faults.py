"""The verification fails when it must: faults written into exported tiny graphs.

Each fault is written into a copy of a correct export, of each graph kind, and checked
against the model it came from; the same faults on the real SmolLM2 graph are in
test_real_model.py.
"""

from __future__ import annotations

from pathlib import Path

import graph_faults
import numpy as np
import pytest

from tritonkit.export import main_export
from tritonkit.export.architectures import dims_of
from tritonkit.export.loading import load
from tritonkit.export.verify import Verifier, top1_agreement
from tritonkit.export.verify_fused import FusedVerifier

FAULTS = {
    "concat": {
        "weight matrix moved by 1e-2": lambda p, d: graph_faults.perturb_weight(p, 1e-2, 4),
        "rotary base x10": lambda p, d: graph_faults.wrong_rope_base(p, 1e5, d.head_dim),
        "KV heads 0 and 1 swapped": lambda p, d: graph_faults.swap_kv_heads(
            p, d.hidden_size, d.num_kv_heads, d.head_dim
        ),
    },
    "fused": {
        "weight matrix moved by 1e-2": lambda p, d: graph_faults.perturb_weight(p, 1e-2, 2),
        "rotary base x10": lambda p, d: graph_faults.wrong_rope_base_fused(p, 1e5),
        "KV heads 0 and 1 swapped": lambda p, d: graph_faults.swap_kv_heads_fused(
            p, d.num_attention_heads, d.num_kv_heads, d.head_dim
        ),
    },
}
CASES = [(graph, fault) for graph, faults in FAULTS.items() for fault in faults]


def checks_of(graph: str, loaded, path: Path) -> list:
    dims = dims_of(loaded.model.config)
    verifier = (FusedVerifier if graph == "fused" else Verifier)(
        loaded.model, str(path), dims, "float32"
    )
    return verifier.check_all()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[object, dict[str, Path]]:
    """tiny-llama (GQA: 6 query heads, 2 KV heads; rotary base 10000), exported both ways."""
    root = tmp_path_factory.mktemp("verify")
    exports = {g: main_export("tiny-llama", root / g, graph=g).output for g in FAULTS}
    return load("tiny-llama"), exports


@pytest.mark.parametrize("graph", FAULTS)
def test_clean_graph_passes_inside_its_limits(tiny, graph):
    loaded, exports = tiny
    checks = checks_of(graph, loaded, exports[graph] / "model.onnx")
    assert all(c.passed for c in checks)
    assert max(c.onnx_err / c.limit for c in checks) < 0.5


@pytest.mark.parametrize(("graph", "fault"), CASES)
def test_fault_fails_verification(tiny, tmp_path, graph, fault):
    loaded, exports = tiny
    broken = graph_faults.copy_export(exports[graph], tmp_path / "broken")
    FAULTS[graph][fault](broken, dims_of(loaded.model.config))
    checks = checks_of(graph, loaded, broken)
    failed = [c for c in checks if not c.passed]
    assert len(failed) >= len(checks) // 2
    assert max(c.onnx_err / c.limit for c in failed) > 50  # far outside, not at the edge


def test_top1_near_ties_are_excused_and_real_misses_are_not():
    ref = np.array([[1.0, 0.99995, -3.0], [2.0, 0.0, 1.0]])  # (N=2, vocab=3)
    got = np.array([[0.9999, 1.0, -3.0], [0.0, 2.0, 1.0]])  # row 0 flips a near tie
    assert top1_agreement(got, ref, tie=1e-3) == (0, 1)  # row 1 is a real miss
    assert top1_agreement(ref, ref, tie=0.0) == (2, 0)
