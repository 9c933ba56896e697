"""What an export folder and a built model repository look like, declared once.

    EXPORT/                          REPO/
      model.onnx (+ .data)             NAME_decoder/config.pbtxt
      tokenizer.json ...               NAME_decoder/V/model.onnx (+ .data)  (the weights, once)
      generation.json                  NAME/config.pbtxt                    (decoupled, python)
      export.json                      NAME/V/model.py + tritonkit_runtime/
                                       NAME/V/decoder.json  (which decoder version V runs)
                                       NAME/V/tokenizer/ (tokenizer, generation.json, export.json)
                                       NAME_sync/  (unary twin of NAME, one BLS call a request)

``read_export_report`` is the one reader of ``export.json`` (the export's report), typed
as ``ExportReport``; ``read_decoder_ref`` / ``decoder_ref_text`` are the one reader and
writer of ``NAME/V/decoder.json``. The builder, the validator, the entry model inside
Triton, the profiler's input writer, the publisher and the exporters all use these.

Standard library only: this module is copied into every built repository with the rest
of the runtime (as ``tritonkit_runtime/layout.py``) and runs inside the Triton container.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---- an export folder ------------------------------------------------------------------
ONNX_FILE = "model.onnx"  # the decoder graph (+ model.onnx.data past 2 GB)
EXPORT_REPORT = "export.json"  # what the export is and how it was verified (ExportReport)
GENERATION_FILE = "generation.json"  # eos/pad/bos ids and the context, for the entry model
TOKENIZER_FILE = "tokenizer.json"  # the fast tokenizer the entry model runs
# What a built entry model version carries in its tokenizer folder, when the export has it.
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    GENERATION_FILE,
    "config.json",
    EXPORT_REPORT,
)

# ---- a model repository ----------------------------------------------------------------
CONFIG_FILE = "config.pbtxt"  # REPO/MODEL/config.pbtxt
MODEL_FILE = "model.py"  # a python-backend model's source, REPO/MODEL/V/model.py
DECODER_REF = "decoder.json"  # REPO/NAME/V/decoder.json: {"model": NAME_decoder, "version": V}
TOKENIZER_DIR = "tokenizer"  # REPO/NAME/V/tokenizer/: TOKENIZER_FILES
RUNTIME_PACKAGE = "tritonkit_runtime"
# The vLLM engine: REPO/NAME/V/hf/ holds a Hugging Face folder, which `tritonkit export hf`
# writes with this report (source, dtype, verification, a SHA-256 per file).
HF_DIR = "hf"
IMPORT_REPORT = "tritonkit-import.json"
# A TensorRT engine's optimization profiles, in order (`tritonkit export tensorrt` builds
# them; the tensorrt_plan config lists them so Triton picks one per request by shape).
TENSORRT_PROFILES = ("prefill", "decode")
TENSORRT_REPORT = "tensorrt.json"  # REPO/NAME/V/tritonkit_runtime/: these runtime modules


class LayoutError(ValueError):
    """A file of the layout is missing or unreadable; the message is one line."""


def decoder_model_name(entry: str) -> str:
    """The decoder model that entry model ``entry`` runs, as ``build_repository`` names it."""
    return f"{entry}_decoder"


def sync_model_name(entry: str) -> str:
    """The unary (non-decoupled) twin of entry model ``entry``."""
    return f"{entry}_sync"


def version_numbers(model_dir: str | os.PathLike[str]) -> list[int]:
    """The numeric version folders of ``REPO/MODEL``, ascending (none: empty)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit()  # not '²', which int() refuses
    )


def tokenizer_dir(version_dir: str | os.PathLike[str]) -> Path:
    """``REPO/NAME/V/tokenizer``: the tokenizer files and reports of an entry version; for
    a vLLM version, its Hugging Face folder ``REPO/NAME/V/hf``, which holds the same
    tokenizer files (``tokenizer.json``, the chat template)."""
    version = Path(version_dir)
    hf = version / HF_DIR
    if not (version / TOKENIZER_DIR).exists() and hf.is_dir():
        return hf
    return version / TOKENIZER_DIR


# ---- decoder.json ----------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderRef:
    """Which decoder graph an entry model version runs: ``REPO/model/version/file``."""

    model: str
    version: int
    file: str = ONNX_FILE

    def graph_path(self, repository: str | os.PathLike[str]) -> Path:
        """The graph's path in ``repository``."""
        return Path(repository) / self.model / str(self.version) / self.file


def decoder_ref_text(ref: DecoderRef) -> str:
    """``decoder.json``'s text for ``ref`` (the file name is left out when it is the default)."""
    data: dict[str, Any] = {"model": ref.model, "version": ref.version}
    if ref.file != ONNX_FILE:
        data["file"] = ref.file
    return json.dumps(data, indent=2) + "\n"


# A folder or file name: letters, digits, '_', '-', '.', not hidden, no separator or NUL.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")


def parse_decoder_ref(text: str, source: str = DECODER_REF) -> DecoderRef:
    """A ``DecoderRef`` from ``decoder.json`` text.

    Raises:
        LayoutError: not JSON, or no ``model`` name / integer ``version`` in it.
    """
    try:
        data = json.loads(text)
        model, version = data["model"], data["version"]
        file = data.get("file", ONNX_FILE)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LayoutError(f"{source} is not a decoder reference: {exc!r}") from exc
    if not isinstance(model, str) or not _NAME.fullmatch(model):
        raise LayoutError(f"{source}: model must be a model folder name, got {model!r}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
        raise LayoutError(f"{source}: version must be an integer in 1..2**63-1, got {version!r}")
    if not isinstance(file, str) or not _NAME.fullmatch(file):
        raise LayoutError(f"{source}: file must be a file name, got {file!r}")
    return DecoderRef(model, version, file)


def read_decoder_ref(version_dir: str | os.PathLike[str]) -> DecoderRef:
    """Read ``version_dir/decoder.json``.

    Raises:
        LayoutError: the file is missing or is not a decoder reference.
    """
    path = Path(version_dir) / DECODER_REF
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LayoutError(f"{path} is unreadable: {exc.strerror or exc}") from exc
    return parse_decoder_ref(text, str(path))


# ---- export.json -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDims:
    """The numbers that shape the decoder's inputs and outputs (``export.json``'s ``dims``)."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReportTensor:
    """One graph input or output: ONNX type name (``FLOAT16``) and shape (names: dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ExportReport:
    """``export.json``, typed: the fields the repository builder and the runtime read.

    ``raw`` keeps the whole report (checks, quality, timings, ...) as written.
    """

    passed: bool
    graph: str  # "fused" (KV rows, GroupQueryAttention) or "concat" (torch.export)
    dtype: str  # float32, float16 or bfloat16
    dims: ModelDims
    model_file: str  # the graph, in the export folder (and in NAME_decoder/V/)
    external_data: str | None  # its weights file past 2 GB, if any
    inputs: tuple[ReportTensor, ...]
    outputs: tuple[ReportTensor, ...]
    quantize: str | None = None
    device: str = "cpu"  # where it was exported and verified: cpu or cuda
    min_onnxruntime: str | None = None  # the oldest onnxruntime that loads it (None: older export)
    source: dict[str, Any] = field(default_factory=dict)  # where the model came from
    versions: dict[str, str] = field(default_factory=dict)  # tool versions that exported it
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def fused(self) -> bool:
        return self.graph == "fused"

    @classmethod
    def from_dict(cls, data: Any, source: str = EXPORT_REPORT) -> ExportReport:
        """Check and type a parsed report.

        Raises:
            LayoutError: a field is missing or has the wrong type.
        """
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object, not {type(data).__name__}")
            dims = {k: int(data["dims"][k]) for k in ModelDims.__dataclass_fields__}
            files = data["files"]
            return cls(
                passed=bool(data["passed"]),
                graph=str(data.get("graph") or "concat"),
                dtype=str(data["dtype"]),
                dims=ModelDims(**dims),
                model_file=str(files["model"]),
                external_data=str(files["external_data"]) if files.get("external_data") else None,
                inputs=tuple(_tensor(t) for t in data["inputs"]),
                outputs=tuple(_tensor(t) for t in data["outputs"]),
                quantize=data.get("quantize") or None,
                device=str(data.get("device") or "cpu"),
                min_onnxruntime=str(data["min_onnxruntime"])
                if data.get("min_onnxruntime")
                else None,
                source=dict(data.get("source") or {}),
                versions=dict(data.get("versions") or {}),
                raw=data,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)
            raise LayoutError(f"{source} is not an export report: {what}") from exc


def _tensor(entry: dict[str, Any]) -> ReportTensor:
    shape = tuple(d if isinstance(d, int) else str(d) for d in entry["shape"])
    return ReportTensor(str(entry["name"]), str(entry["dtype"]), shape)


def read_export_report(folder: str | os.PathLike[str]) -> ExportReport:
    """Read ``folder/export.json`` (an export folder, or an entry version's tokenizer folder).

    Raises:
        LayoutError: no ``export.json`` there, or it is not an export report.
    """
    path = Path(folder) / EXPORT_REPORT
    if not path.is_file():
        raise LayoutError(f"{folder} has no {EXPORT_REPORT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path} is unreadable: {exc}") from exc
    return ExportReport.from_dict(data, str(path))
