"""GGUF checkpoints (llama.cpp, Ollama, LM Studio) -> a plain Hugging Face model to export.

transformers reads GGUF itself (``from_pretrained(..., gguf_file=...)``) and dequantizes
every tensor to the requested dtype; the tokenizer and its chat template come from the
file's metadata. The model it returns is marked "quantized with gguf" and refuses
``save_pretrained``, so it is rebuilt from its config (``quantization_config`` removed)
with ``load_state_dict(strict=True)``: the export then sees an ordinary model.

The file is checked before anything is dequantized: the GGUF magic, every tensor's
data inside the file (a truncated download fails here, not halfway through), and the
architecture against the ones tritonkit exports.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tritonkit.errors import ModelSourceError, UnsupportedModelError

MAGIC = b"GGUF"
SUFFIX = ".gguf"


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file holds, read from its header without dequantizing anything."""

    file: str  # the file's name
    sha256: str
    size_bytes: int
    architecture: str  # general.architecture, in llama.cpp's naming
    quantization: str  # general.file_type, e.g. "MOSTLY_Q4_1"
    tensor_types: dict[str, int]  # e.g. {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    has_chat_template: bool
    head_dim: int | None  # {architecture}.attention.key_length, when the file states it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_gguf_source(source: str, gguf_file: str | None = None) -> bool:
    """Whether ``source`` (with ``gguf_file``) names a GGUF checkpoint rather than a folder."""
    return gguf_file is not None or source.lower().endswith(SUFFIX)


def resolve(source: str, gguf_file: str | None = None) -> Path:
    """The GGUF file named by ``source`` (a ``.gguf`` path, or a folder plus ``gguf_file``).

    Raises:
        ModelSourceError: the file or folder does not exist, or ``gguf_file`` is not a
            plain file name inside the folder.
    """
    if gguf_file is None:
        path = Path(source).expanduser()
    else:
        name = Path(gguf_file)
        if name.name != gguf_file or gguf_file in ("", ".", ".."):
            raise ModelSourceError(
                f"--gguf-file {gguf_file!r} must be a file name inside {source!r}, not a path"
            )
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelSourceError(f"model folder {source!r} does not exist")
        path = folder / gguf_file
    if not path.is_file():
        raise ModelSourceError(f"GGUF file {str(path)!r} does not exist")
    return path.resolve()


def inspect(path: Path) -> GGUFInfo:
    """Read ``path``'s header and tensor table; nothing is dequantized.

    Raises:
        ModelSourceError: not a GGUF file, or truncated / corrupt.
    """
    with path.open("rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise ModelSourceError(
            f"{path.name} is not a GGUF file (it starts with {head!r}, not {MAGIC!r}); "
            "pass a .gguf checkpoint, a Hugging Face folder, or a hub id"
        )
    import gguf

    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except (ValueError, IndexError, KeyError, OSError) as exc:
        raise ModelSourceError(
            f"{path.name} is truncated or corrupt ({exc}); download it again"
        ) from exc
    if end > size or not reader.tensors:
        raise ModelSourceError(
            f"{path.name} is truncated: its tensors need {end} bytes, the file has {size}; "
            "download it again"
        )

    def field(key: str) -> Any:
        value = reader.fields.get(key)
        return None if value is None else value.contents()

    file_type = field("general.file_type")
    try:
        quantization = gguf.LlamaFileType(int(file_type)).name if file_type is not None else "?"
    except ValueError:
        quantization = f"file_type {file_type}"
    return GGUFInfo(
        file=path.name,
        sha256=sha256_file(path),
        size_bytes=size,
        architecture=str(field("general.architecture") or "?"),
        quantization=quantization,
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors)),
        has_chat_template=field("tokenizer.chat_template") is not None,
        head_dim=_int_or_none(field(f"{field('general.architecture')}.attention.key_length")),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def load_gguf(path: Path, torch_dtype: Any, device: str) -> tuple[Any, Any, GGUFInfo]:
    """Dequantize ``path`` into a clean ``PreTrainedModel`` and its tokenizer.

    Returns ``(model, tokenizer or None, info)``; the model is in eval mode.

    Raises:
        ModelSourceError: not GGUF, truncated, or transformers cannot read it.
        UnsupportedModelError: an architecture transformers or tritonkit cannot export.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .loading import check_causal_lm

    info = inspect(path)
    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except ValueError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "not supported" in first:
            raise UnsupportedModelError(
                f"GGUF architecture {info.architecture!r} of {name} cannot be read by "
                f"transformers ({first})"
            ) from exc
        raise ModelSourceError(f"cannot read the GGUF metadata of {name}: {first}") from exc
    check_causal_lm(config, name)
    _fix_config(config, info)
    try:
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch_dtype, config=config
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelSourceError(f"cannot dequantize {name}: {first}") from exc
    model = _rebuild(quantized, torch_dtype).to(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = None  # export still works; serving will ask for one
    return model.eval(), tokenizer, info


def _fix_config(config: Any, info: GGUFInfo) -> None:
    """Repair what transformers' GGUF reader leaves out of ``config``, in place.

    GPT-2: the GGUF context length lands in ``n_ctx``, which GPT2Config ignores, so the
    position table would be sized 1024 whatever the file says. Qwen2/Qwen3: the head
    size (``attention.key_length``) is not read, so Qwen3 would take its default 128.
    ``architectures`` is unset, and tools that read config.json (TensorRT builders) want it.
    """
    if config.model_type == "gpt2" and getattr(config, "n_ctx", None):
        config.n_positions = int(config.n_ctx)
    elif info.head_dim and hasattr(config, "head_dim") and config.head_dim != info.head_dim:
        config.head_dim = info.head_dim
    if not getattr(config, "architectures", None):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]


def _rebuild(quantized: Any, torch_dtype: Any) -> Any:
    """A plain model with ``quantized``'s weights, which ``save_pretrained`` accepts."""
    import torch

    values = quantized.config.to_dict()
    values.pop("quantization_config", None)
    config = type(quantized.config).from_dict(values)
    config.dtype = torch_dtype
    with torch.device("meta"):
        model = type(quantized)(config)
    # assign=True takes the dequantized tensors as they are: no second copy in memory.
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    # Buffers outside the state dict (rotary inv_freq) are computed at init: take them over.
    computed = dict(quantized.named_buffers())
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, computed[name])
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelSourceError(f"the GGUF checkpoint has no values for {', '.join(left[:3])}")
    model.generation_config = quantized.generation_config
    return model
