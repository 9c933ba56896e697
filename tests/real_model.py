"""The real, trained model of the test run: SmolLM2-135M-Instruct from the PyPI wheel.

It is exported once per test run, and at most once per machine for the same inputs:
the export lands in ``CACHE/test-exports/smollm2-KEY`` where KEY hashes the pinned
wheel, the export code and the versions of torch, transformers, onnx and onnxruntime;
a later run with the same KEY reuses it (its ``export.json`` must say it passed).
Exports under another KEY (older code) are removed once unused for an hour: each is
half a gigabyte, and a session that edits the exporter would otherwise fill the disk.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import tritonkit.export as export_package
from tritonkit.export import main_export, packaged

NAME = packaged.SMOLLM2.name
PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "gguf", "tritonkit")


def export_key() -> str:
    """What the cached export depends on, hashed."""
    h = hashlib.sha256(packaged.SMOLLM2.wheel_sha256.encode())
    for source in sorted(Path(export_package.__file__).resolve().parent.glob("*.py")):
        h.update(source.name.encode())
        h.update(source.read_bytes())
    for package in PACKAGES:
        h.update(f"{package}=={md.version(package)}".encode())
    return h.hexdigest()[:16]


def cached_export(quantize: str | None = None) -> Path:
    """The verified SmolLM2 export (``quantize="int4"``: 4-bit weights), made now if no
    cached one matches."""
    suffix = f"-{quantize}" if quantize else ""
    folder = packaged.cache_root() / "test-exports" / f"{NAME}{suffix}-{export_key()}"
    try:
        report = json.loads((folder / "export.json").read_text())
        if report["passed"] and (folder / report["files"]["model"]).is_file():
            os.utime(folder)  # last used now: _remove_stale ages exports by their last use
            return folder
    except (OSError, ValueError, KeyError):
        pass
    main_export(NAME, folder, force=True, quantize=quantize)
    _remove_stale(folder)
    return folder


def _remove_stale(current: Path, min_age_s: float = 3600) -> None:
    """Remove the other KEYs' exports of ``current``'s variant not used for ``min_age_s``
    (one used more recently may belong to another checkout's run going on now)."""
    variant = re.compile(re.escape(current.name[:-16]) + "[0-9a-f]{16}")
    for other in current.parent.iterdir():
        if other == current or not variant.fullmatch(other.name):
            continue
        try:
            idle = time.time() - other.stat().st_mtime
        except OSError:  # another run removed it first
            continue
        if idle > min_age_s:
            shutil.rmtree(other, ignore_errors=True)


def reference() -> Any:
    """The dequantized transformers model and its tokenizer (``LoadedModel``)."""
    from tritonkit.export.loading import load

    return load(NAME, progress=False)


def greedy(loaded: Any, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers ``generate``, greedy, stopping at the model's EOS (EOS not included)."""
    import torch

    eos = loaded.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    with torch.no_grad():
        out = loaded.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.int64),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    new = [int(t) for t in out[0, len(ids) :]]
    return new[: next((i for i, t in enumerate(new) if t in eos), len(new))]
