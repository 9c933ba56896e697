"""A verified Hugging Face folder, for engines that load the model themselves (vLLM).

``tritonkit export hf`` loads a model exactly as ``export onnx`` does (an alias such as
``smollm2``, a GGUF file, a folder, a hub id), writes it with ``save_pretrained``
(safetensors, config, tokenizer, chat template) and verifies the folder: loaded back by
transformers, it gives the same logits as the model it was written from, and its
greedy continuation of a probe prompt is recorded in ``tritonkit-import.json`` with the
source, the dtype and a SHA-256 per file. ``repo build --engine vllm`` reads that report
and refuses a folder without it unless told otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.core.layout import IMPORT_REPORT
from tritonkit.errors import ExportError, VerificationError
from tritonkit.fsutil import check_output_dir, staged_output

from .from_gguf import sha256_file

PROBE = "The capital of France is"
GREEDY_TOKENS = 16
LOGIT_TOLERANCE = 1e-4  # the same weights in the same dtype: only kernel order differs


@dataclass(frozen=True)
class ImportResult:
    """Where the folder went and its report (the JSON in ``IMPORT_REPORT``)."""

    output: Path
    report: dict[str, Any]


def import_hf(
    source: str,
    output: str | Path,
    dtype: str = "float32",
    force: bool = False,
    gguf_file: str | None = None,
    progress: bool = True,
) -> ImportResult:
    """Write ``source`` as a verified Hugging Face folder at ``output``.

    Raises:
        UsageError: ``output`` is a file, a mount point or non-empty without ``force``.
        ModelSourceError / UnsupportedModelError: ``source`` cannot be loaded.
        VerificationError: the written folder does not give the model's logits back.
        ExportError: the folder cannot be written.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .loading import load

    output = Path(output).expanduser().resolve()
    check_output_dir(output, force)
    start = time.perf_counter()
    loaded = load(source, dtype=dtype, gguf_file=gguf_file, progress=progress)
    if loaded.tokenizer is None:
        raise ExportError(f"{source} has no tokenizer: vLLM and the entry model need one")
    ids = list(loaded.tokenizer(PROBE)["input_ids"])
    x = torch.tensor([ids])  # (1, P)
    with torch.no_grad():
        want = loaded.model(x).logits[0, -1].float()  # (vocab,)
        greedy = loaded.model.generate(
            x, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, do_sample=False
        )[0, len(ids) :].tolist()
    with staged_output(output, ExportError) as folder:
        try:
            loaded.model.save_pretrained(folder, safe_serialization=True)
            loaded.tokenizer.save_pretrained(folder)
        except OSError as exc:
            raise ExportError(f"cannot write {output}: {exc}") from exc
        back = AutoModelForCausalLM.from_pretrained(folder, dtype=loaded.model.dtype).eval()
        with torch.no_grad():
            got = back(x).logits[0, -1].float()  # (vocab,)
        error = float((got - want).abs().max())
        if error > LOGIT_TOLERANCE:
            raise VerificationError(
                f"the written folder's logits differ from the model's by {error:.3g} "
                f"(limit {LOGIT_TOLERANCE}): the weights did not survive save_pretrained"
            )
        report = {
            "format": "huggingface",
            "source": loaded.source_report(),
            "dtype": dtype,
            "architecture": type(loaded.model).__name__,
            "verification": {
                "probe": PROBE,
                "probe_ids": ids,
                "greedy_ids": greedy,
                "max_abs_logit_error": error,
                "limit": LOGIT_TOLERANCE,
            },
            "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()},
            "seconds": round(time.perf_counter() - start, 1),
        }
        (folder / IMPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return ImportResult(output, report)


def read_import_report(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``IMPORT_REPORT``, or None when it has none (a folder made elsewhere).

    Raises:
        ExportError: the report is there but not JSON.
    """
    path = Path(folder) / IMPORT_REPORT
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(report, dict):
        raise ExportError(f"{path} is not a JSON object")
    return report
