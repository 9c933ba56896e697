"""``validate_repository``: parse every config with the ModelConfig schema and check the files.

Checks, per model: the config parses and names its folder; numeric version folders
exist for what the version policy serves; each version holds its backend's files
(``model.py`` or ``model.onnx``); an entry model's I/O is the interface clients
expect, and its decoder, tokenizer and runtime are present; a decoder's config
matches its ONNX graph's inputs and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonkit.core import layout
from tritonkit.errors import RepositoryError
from tritonkit.table import render

from . import config as cfg


@dataclass
class Finding:
    """One check on one model."""

    model: str
    check: str
    ok: bool
    detail: str = ""


@dataclass
class ValidationReport:
    """All findings for a repository; ``ok`` when none failed."""

    path: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def add(self, model: str, check: str, ok: bool, detail: str = "") -> bool:
        self.findings.append(Finding(model, check, ok, detail))
        return ok

    def table(self) -> str:
        """A plain-text table of every finding."""
        rows = [
            (f.model, f.check, f"{'ok' if f.ok else 'FAIL'}  {f.detail}".rstrip())
            for f in self.findings
        ]
        return render(("model", "check", "result"), rows, align="lll")


def _served_versions(config: Any, present: list[int]) -> list[int]:
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        return sorted(policy.specific.versions)
    if which == "all":
        return present
    n = policy.latest.num_versions if which == "latest" else 1
    return present[-n:] if present else []


def _is_entry(config: Any) -> bool:
    return "decoder_model" in config.parameters or _is_vllm(config)


def _is_vllm(config: Any) -> bool:
    engine = config.parameters.get("engine")
    return engine is not None and engine.string_value == "vllm"


def _check_vllm_files(report: ValidationReport, name: str, vdir: Path) -> None:
    hf = vdir / layout.HF_DIR
    for rel in (f"{layout.HF_DIR}/config.json", f"{layout.HF_DIR}/tokenizer.json"):
        report.add(name, f"has {rel}", (vdir / rel).is_file(), f"{vdir.name}/{rel}")
    report.add(name, f"has {layout.HF_DIR}/*.safetensors", any(hf.glob("*.safetensors")))
    rel = layout.RUNTIME_PACKAGE
    report.add(name, f"has {rel}", (vdir / rel).is_dir(), f"{vdir.name}/{rel}")


def _check_sync(report: ValidationReport, repo: Path, config: Any) -> None:
    entry = config.parameters["entry_model"].string_value
    ok = (repo / entry / layout.CONFIG_FILE).is_file()
    report.add(config.name, "forwards to entry model", ok, entry)


def _onnx_io(path: Path) -> tuple[dict[str, int], dict[str, int]] | None:
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(str(path), load_external_data=False).graph

    def io(values: Any) -> dict[str, int]:
        return {v.name: len(v.type.tensor_type.shape.dim) for v in values}

    return io(graph.input), io(graph.output)


def _check_entry(report: ValidationReport, repo: Path, config: Any, vdir: Path) -> None:
    name = config.name
    for expected, actual, kind in (
        (cfg.entry_inputs(), config.input, "inputs"),
        (cfg.entry_outputs(), config.output, "outputs"),
    ):
        have = {t.name: t.data_type for t in actual}
        wrong = [
            s.name
            for s in expected
            if (s.name not in have and not s.optional)
            or (s.name in have and have[s.name] != s.data_type)
        ]
        report.add(
            name, f"entry {kind}", not wrong, f"missing or mistyped: {wrong}" if wrong else ""
        )
    report.add(
        name,
        "decoupled",
        config.model_transaction_policy.decoupled,
        "" if config.model_transaction_policy.decoupled else "entry model must be decoupled",
    )
    if _is_vllm(config):  # vLLM loads the Hugging Face folder itself: no decoder model
        _check_vllm_files(report, name, vdir)
        return
    try:
        onnx_path = layout.read_decoder_ref(vdir).graph_path(repo)
    except layout.LayoutError as exc:
        report.add(name, f"v{vdir.name} {layout.DECODER_REF}", False, str(exc))
        return
    report.add(
        name, f"v{vdir.name} decoder graph", onnx_path.is_file(), str(onnx_path.relative_to(repo))
    )
    tok = layout.TOKENIZER_DIR
    for rel in (
        f"{tok}/{layout.TOKENIZER_FILE}",
        f"{tok}/{layout.GENERATION_FILE}",
        f"{tok}/{layout.EXPORT_REPORT}",
        layout.RUNTIME_PACKAGE,
    ):
        report.add(name, f"has {rel}", (vdir / rel).exists(), f"{vdir.name}/{rel}")


def _check_decoder(report: ValidationReport, config: Any, onnx_path: Path) -> None:
    io = _onnx_io(onnx_path)
    if io is None:
        report.add(config.name, "I/O matches ONNX", True, "skipped: onnx not installed")
        return
    graph_in, graph_out = io
    cfg_in = {t.name: len(t.dims) for t in config.input}
    cfg_out = {t.name: len(t.dims) for t in config.output}
    ok = cfg_in == graph_in and cfg_out == graph_out
    detail = "" if ok else f"config {sorted(cfg_in)} vs graph {sorted(graph_in)}"
    report.add(config.name, "I/O matches ONNX", ok, detail)


def validate_repository(path: str | Path) -> ValidationReport:
    """Validate the model repository at ``path``; never raises on a failed check.

    Raises:
        RepositoryError: ``path`` is not a folder.
    """
    repo = Path(path).expanduser().resolve()
    if not repo.is_dir():
        raise RepositoryError(f"model repository {str(repo)!r} does not exist")
    report = ValidationReport(repo)
    model_dirs = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_dirs:
        report.add("-", "has models", False, "no model folders")
    for model_dir in model_dirs:
        model = model_dir.name
        try:
            config = cfg.read(model_dir)
        except RepositoryError as exc:
            report.add(model, "config parses", False, str(exc))
            continue
        report.add(model, "config parses", True)
        report.add(
            model, "name matches folder", config.name in ("", model), f"config name {config.name!r}"
        )
        config.name = config.name or model
        present = layout.version_numbers(model_dir)
        served = _served_versions(config, present)
        missing = [v for v in served if v not in present]
        report.add(
            model,
            "versions present",
            bool(served) and not missing,
            f"serves {served}" + (f", missing {missing}" if missing else ""),
        )
        for v in [v for v in served if v in present]:
            vdir = model_dir / str(v)
            if config.backend == "python":
                has = (vdir / layout.MODEL_FILE).is_file()
                report.add(model, f"v{v} has {layout.MODEL_FILE}", has)
            graph = vdir / layout.ONNX_FILE
            if config.platform == "onnxruntime_onnx" or (
                config.backend == "python" and graph.exists()
            ):
                ok = report.add(model, f"v{v} has {layout.ONNX_FILE}", graph.is_file())
                if ok:
                    _check_decoder(report, config, graph)
            if _is_entry(config):
                _check_entry(report, repo, config, vdir)
        if "entry_model" in config.parameters:
            _check_sync(report, repo, config)
        if config.max_batch_size < 0:
            report.add(model, "max_batch_size", False, "must be >= 0")
    return report
