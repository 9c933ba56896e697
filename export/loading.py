"""Resolve a model source (``tiny-llama``, a local folder, or a hub id) to a model and tokenizer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.errors import ModelSourceError, UnsupportedModelError

from . import tiny
from .architectures import spec_for

DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class LoadedModel:
    """A causal LM ready to export, with where it came from."""

    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any | None  # PreTrainedTokenizerFast, or None if the source has none
    source: str  # what the user passed
    kind: str  # "embedded", "folder" or "hub"
    revision: str  # hub commit, or a content hash of the folder / weights


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


def _check_causal_lm(config: Any, source: str) -> None:
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
    spec_for(model_type)  # raises with the supported list


def load(source: str, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Load ``source``: ``tiny-llama``, a folder with config.json, or a hub id.

    Raises:
        ModelSourceError: the source does not exist or cannot be loaded.
        UnsupportedModelError: it is not a causal LM, or its architecture is not supported.
    """
    torch_dtype = _torch_dtype(dtype)
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
                f"a hub id, or {tiny.NAME!r}"
            )
        if not (path / "config.json").is_file():
            raise ModelSourceError(
                f"{source!r} has no config.json; is it a Hugging Face model folder "
                "(save_pretrained)?"
            )
        return _load_pretrained(
            str(path), source, "folder", _folder_hash(path), torch_dtype, device
        )
    return _load_pretrained(source, source, "hub", "", torch_dtype, device)


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
    _check_causal_lm(config, source)
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
