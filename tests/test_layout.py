"""The repository layout, declared once (``core/layout.py``): the decoder reference,
the typed export report, version folders. Pure: no export, no server."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tritonkit.core import layout
from tritonkit.core.layout import DecoderRef, ExportReport, LayoutError

DIMS = dict(
    num_layers=2, num_attention_heads=4, num_kv_heads=2, head_dim=16,
    hidden_size=64, vocab_size=100, max_positions=256,
)  # fmt: skip


def report_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "passed": True,
        "graph": "fused",
        "dtype": "float32",
        "dims": dict(DIMS),
        "files": {"model": "model.onnx", "external_data": None},
        "inputs": [{"name": "input_ids", "dtype": "INT64", "shape": ["batch_size", 7]}],
        "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": ["batch_size", 1, 100]}],
        "source": {"model": "tiny-llama"},
        "versions": {"tritonkit": "0.1.0"},
        "quality": {"passed": True},
    }
    data.update(changes)
    return data


def test_the_export_report_is_read_typed(tmp_path: Path) -> None:
    (tmp_path / layout.EXPORT_REPORT).write_text(json.dumps(report_dict()))
    report = layout.read_export_report(tmp_path)
    assert report.passed and report.fused and report.dtype == "float32"
    assert report.dims.max_positions == 256 and report.dims.to_dict() == DIMS
    assert report.model_file == "model.onnx" and report.external_data is None
    assert report.inputs[0].shape == ("batch_size", 7) and report.outputs[0].dtype == "FLOAT"
    assert report.source["model"] == "tiny-llama" and report.raw["quality"] == {"passed": True}


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "has no export.json"),
        ("{not json", "unreadable"),
        ("[1, 2]", "not an export report: a JSON object, not list"),
        (json.dumps(report_dict(dims={"num_layers": 2})), "no 'num_attention_heads' field"),
        (json.dumps({k: v for k, v in report_dict().items() if k != "files"}), "no 'files'"),
        (json.dumps(report_dict(dims={**DIMS, "head_dim": "wide"})), "not an export report"),
    ],
)
def test_a_broken_export_report_is_one_clear_line(
    tmp_path: Path, text: str | None, message: str
) -> None:
    if text is not None:
        (tmp_path / layout.EXPORT_REPORT).write_text(text)
    with pytest.raises(LayoutError, match=message) as info:
        layout.read_export_report(tmp_path)
    assert "\n" not in str(info.value)


def test_the_decoder_reference_round_trips(tmp_path: Path) -> None:
    ref = DecoderRef("llm_decoder", 3)
    (tmp_path / layout.DECODER_REF).write_text(layout.decoder_ref_text(ref))
    assert json.loads((tmp_path / layout.DECODER_REF).read_text()) == {
        "model": "llm_decoder",
        "version": 3,
    }
    assert layout.read_decoder_ref(tmp_path) == ref
    assert ref.graph_path("/repo") == Path("/repo/llm_decoder/3/model.onnx")
    other = DecoderRef("d", 1, "model.plan")
    assert layout.parse_decoder_ref(layout.decoder_ref_text(other)) == other


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": "../../etc", "version": 1}, "model must be a model folder name"),
        ({"model": ".hidden", "version": 1}, "model must be a model folder name"),
        ({"model": "d", "version": "1"}, r"version must be an integer in 1\.\."),
        ({"model": "d", "version": True}, r"version must be an integer in 1\.\."),
        ({"model": "d", "version": 0}, r"version must be an integer in 1\.\."),
        ({"model": "d", "version": 2**63}, r"version must be an integer in 1\.\."),
        ({"model": "d\u0000", "version": 1}, "model must be a model folder name"),
        ({"model": "  ", "version": 1}, "model must be a model folder name"),
        ({"model": "d", "version": 1, "file": "../x.onnx"}, "file must be a file name"),
        ({"version": 1}, "not a decoder reference"),
        ([], "not a decoder reference"),
    ],
)
def test_a_hostile_decoder_reference_is_refused(data: Any, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        layout.parse_decoder_ref(json.dumps(data))


def test_a_missing_decoder_reference_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"decoder\.json is unreadable"):
        layout.read_decoder_ref(tmp_path)


def test_version_numbers_are_numeric_folders_only(tmp_path: Path) -> None:
    for name in ("2", "10", "1", "latest", ".3"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert layout.version_numbers(tmp_path) == [1, 2, 10]
    assert layout.version_numbers(tmp_path / "missing") == []


def test_names_of_a_built_repository() -> None:
    assert layout.decoder_model_name("llm") == "llm_decoder"
    assert layout.sync_model_name("llm") == "llm_sync"
    assert layout.tokenizer_dir("/r/llm/1") == Path("/r/llm/1/tokenizer")


def test_the_layout_module_imports_the_standard_library_only() -> None:
    # It runs inside the Triton container, copied into every built repository.
    tree = ast.parse(Path(layout.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for a in node.names
    }
    assert imported <= {"__future__", "json", "os", "re", "dataclasses", "pathlib", "typing"}


def test_the_report_is_frozen_and_compares_by_its_fields() -> None:
    a = ExportReport.from_dict(report_dict())
    b = ExportReport.from_dict(report_dict(quality={"passed": False}))
    assert a == b  # raw is kept, not compared
    with pytest.raises(AttributeError):
        a.passed = False  # type: ignore[misc]


def test_version_folders_are_ascii_digits_only(tmp_path: Path) -> None:
    for name in ("1", "12", "²", "٣", "x", "2"):
        (tmp_path / name).mkdir()
    assert layout.version_numbers(tmp_path) == [1, 2, 12]
