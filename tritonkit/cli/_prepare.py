"""Model source -> verified export (reused when it matches) -> repository, for ``demo``
and ``up``: the onnxruntime engine's ONNX export, or the vLLM engine's HF folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonkit import __version__

ENGINES = ("onnxruntime", "vllm")


@dataclass(frozen=True)
class Prepared:
    """Where the verified export and the repository built from it are."""

    export_dir: Path
    repository: Path
    report: str  # the verification report's file name inside export_dir


def prepare(model: str, engine: str, work: Path, name: str, say: Callable[[str], None]) -> Prepared:
    """Export or import ``model`` into ``work`` (kept for later runs), then build its
    repository for ``engine`` (rebuilt each time: it is cheap, and links the weights).

    Raises:
        TritonkitError: from the export, the import or the build (each names the cause).
    """
    from tritonkit.model_repository import OnnxRuntime, RepositorySpec, Vllm, build_repository

    spec = RepositorySpec(name=name, sync_instances=1)

    if engine == "vllm":
        folder, repo = work / "hf", work / "repository-vllm"
        _import_for_vllm(model, folder, say)
        say("building the model repository (engine: vLLM)")
        build_repository(folder, repo, Vllm(), spec, force=True)
        return Prepared(folder, repo, "tritonkit-import.json")
    from tritonkit.export import main_export

    folder, repo = work / "export", work / "repository"
    if _reusable(folder, model):
        say(f"reusing the verified export in {folder}")
    else:
        main_export(model, folder, force=True, progress=say)
    say("building the model repository")
    build_repository(folder, repo, OnnxRuntime(), spec, force=True)
    return Prepared(folder, repo, "export.json")


def _reusable(export_dir: Path, model: str) -> bool:
    from tritonkit.core.layout import LayoutError, read_export_report

    try:
        report = read_export_report(export_dir)
    except LayoutError:
        return False
    return (
        report.passed
        and report.source.get("model") == model
        and report.versions.get("tritonkit") == __version__
    )


def _import_for_vllm(model: str, folder: Path, say: Callable[[str], None]) -> None:
    """``folder`` holds ``model`` as a verified Hugging Face folder (reused when it does)."""
    from tritonkit.errors import ExportError
    from tritonkit.export.hf_import import import_hf, read_import_report

    try:
        report = read_import_report(folder)
    except ExportError:  # an unreadable report: import again
        report = None
    if report is not None and report.get("source", {}).get("model") == model:
        say(f"reusing the verified Hugging Face folder in {folder}")
        return
    say(f"importing {model} as a Hugging Face folder for vLLM")
    import_hf(model, folder, force=True, progress=False)
