"""``run_bench``: profile a served entry model with genai-perf or perf_analyzer, unmodified,
at several concurrencies, and gather client and server figures.

Per concurrency: read the metrics port, run the tool (one call, its own files under
``OUTPUT/raw/concurrencyC/``), read the metrics port again, then compute the figures
from the tool's per-request profile export with the server's token counts.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tritonkit.core import layout
from tritonkit.errors import BenchError, ToolFailed, UsageError

from . import tools
from .inputs import entry_input_data, load_tokenizer, locate, make_prompts
from .profile import Stat, figures, read_profile_export, retokenized_counts
from .report import BenchReport, LevelResult
from .server_metrics import Samples, scrape, server_figures

TOOLS = ("genai-perf", "perf_analyzer")
BACKENDS = ("tensorrtllm", "vllm")  # the request layouts genai-perf's kserve endpoint knows
DEFAULT_METRICS_PORT = 8002


def default_requests(concurrency: int) -> int:
    """Measured requests at one concurrency: enough for a p99 to mean something."""
    return max(16, 4 * concurrency)


def resolve_tokenizer(
    tokenizer: str | Path | None, repository: str | Path | None, model: str
) -> Path:
    """The model's own tokenizer folder: ``tokenizer``, else ``REPOSITORY/MODEL/V/tokenizer``.

    Raises:
        UsageError: neither given, or no tokenizer.json in ``tokenizer``.
        RepositoryError: the repository has no such entry model or tokenizer.
    """
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if not (path / layout.TOKENIZER_FILE).is_file():
            raise UsageError(
                f"no {layout.TOKENIZER_FILE} in {path}: pass the model's tokenizer folder"
            )
        return path
    if repository is not None:
        return locate(repository, model).tokenizer_dir
    raise UsageError(
        "the profilers need the model's own tokenizer: pass --repository REPO (the one the "
        f"server runs) or --tokenizer DIR (REPO/{model}/1/tokenizer)"
    )


def check_model(url: str, model: str) -> None:
    """The server answers at ``url`` and serves ``model`` with a ``text_input``.

    Raises:
        ConnectionFailed: nothing answers at ``url``.
        ModelNotFound: the server does not serve ``model`` (the message lists what it serves).
        UsageError: ``model`` is not a text generation model.
    """
    from tritonkit.client import LLMClient
    from tritonkit.client.errors import ModelNotFound

    with LLMClient(url, protocol="grpc", model=model, timeout=10) as client:
        try:
            meta = client.model_metadata()
        except ModelNotFound as exc:
            served = sorted({m.name for m in client.models()})
            raise ModelNotFound(
                f"Triton at {url} serves no model {model!r} (it serves: "
                f"{', '.join(served) or 'none'}); pass --model with the entry model's name"
            ) from exc
    if "text_input" not in {i["name"] for i in meta.get("inputs", [])}:
        raise UsageError(
            f"{model!r} has no text_input: bench the entry model (the decoder is profiled "
            "with perf_analyzer and `tritonkit perf inputs` files)"
        )


@dataclass(frozen=True)
class _Plan:
    """What every concurrency level of one run shares."""

    url: str
    model: str
    tool: str
    exe: Path  # genai-perf or perf_analyzer
    env: dict[str, str]
    tokenizer_dir: Path
    input_tokens: int
    output_tokens: int
    exact_output: bool
    backend: str
    seed: int
    timeout_s: float
    data_file: Path  # perf_analyzer's --input-data (written once per run)
    extra: Mapping[str, list[Any]] = field(default_factory=dict)  # more inputs per request


def _flags(options: dict[str, object]) -> list[str]:
    return [text for key, value in options.items() for text in (key, str(value))]


def _command(plan: _Plan, c: int, n: int, warmup: int, raw: Path) -> list[str]:
    """The tool's command line for one concurrency level, its files going to ``raw``."""
    if plan.tool == "perf_analyzer":
        options: dict[str, object] = {
            "-m": plan.model, "-i": "grpc", "-u": plan.url, "--input-data": plan.data_file,
            "--concurrency-range": c, "--request-count": n, "--warmup-request-count": warmup,
            "--stability-percentage": 999,  # a fixed request count, not a stability search
            "--profile-export-file": raw / "profile_export.json",
        }  # fmt: skip
        return [str(plan.exe), "--streaming", "--async", *_flags(options)]
    options = {
        "-m": plan.model, "--endpoint-type": "kserve", "--backend": plan.backend,
        "-u": plan.url, "--tokenizer": plan.tokenizer_dir,
        "--synthetic-input-tokens-mean": plan.input_tokens,
        "--synthetic-input-tokens-stddev": 0,
        "--output-tokens-mean": plan.output_tokens, "--output-tokens-stddev": 0,
        "--concurrency": c, "--request-count": n, "--warmup-request-count": warmup,
        "--num-dataset-entries": max(n, 8), "--random-seed": plan.seed,
        "--artifact-dir": raw, "--profile-export-file": "profile_export.json",
    }  # fmt: skip
    # --output-tokens-mean-deterministic sends min_length: EOS cannot end a request early.
    exact = ["--output-tokens-mean-deterministic"] if plan.exact_output else []
    return [str(plan.exe), "profile", "--streaming", *exact, *_flags(options)]


def _genai_perf_summary(raw: Path) -> dict[str, Any] | None:
    """genai-perf's own figures (avg / p50 / p99 per metric) as it wrote them."""
    found = sorted(raw.glob("**/profile_export_genai_perf.json"))
    if not found:
        return None
    data = json.loads(found[0].read_text())
    return {
        key: {k: v for k, v in value.items() if k in ("unit", "avg", "p50", "p99")}
        for key, value in data.items()
        if isinstance(value, dict) and "avg" in value
    }


def run_bench(
    url: str,
    model: str = "llm",
    *,
    concurrency: Sequence[int] = (1, 2, 4, 8),
    input_tokens: int = 128,
    output_tokens: int = 64,
    tool: str = "genai-perf",
    output: str | Path = "perf-results",
    tokenizer: str | Path | None = None,
    repository: str | Path | None = None,
    metrics_url: str | None = None,
    requests: int | None = None,  # per concurrency; None: default_requests(c)
    warmup: int | None = None,  # per concurrency; None: c
    exact_output: bool = True,  # min tokens = output tokens: every request the same length
    backend: str = "tensorrtllm",  # genai-perf's request layout (tensorrtllm or vllm)
    seed: int = 0,
    timeout_s: float = 900.0,  # per concurrency
    perf_analyzer: str | Path | None = None,
    genai_perf: str | Path | None = None,
    plots: bool = True,
    progress: bool = True,
    request_inputs: Mapping[str, list[Any]] | None = None,  # ``inputs.request_inputs``
) -> BenchReport:
    """Profile entry model ``model`` at gRPC ``url`` (HOST:PORT) and write the results.

    Writes ``OUTPUT/results.json``, ``OUTPUT/results.csv``, the PNG plots and each run's
    raw files under ``OUTPUT/raw/``.

    Raises:
        UsageError: bad arguments, or no tokenizer to give the tools.
        ToolNotFound: perf_analyzer or genai-perf missing (the message says what to install).
        ConnectionFailed: no server at ``url``.  ModelNotFound: it does not serve ``model``.
        BenchError: an explicit ``metrics_url`` that does not answer.
        ToolFailed: the tool failed or ran past ``timeout_s``.
        RepositoryError: ``repository`` has no such entry model.
    """
    levels_wanted = _checked_levels(
        concurrency, tool, backend, input_tokens, output_tokens, requests
    )
    if request_inputs and tool != "perf_analyzer":
        raise UsageError(
            "--request-input goes into perf_analyzer's input data: add --tool perf_analyzer"
        )
    pa = tools.find_perf_analyzer(perf_analyzer)
    env = tools.tool_environment(pa)
    pa_version = tools.check_perf_analyzer(pa, env)
    gp = tools.find_genai_perf(genai_perf) if tool == "genai-perf" else None
    check_model(url, model)
    tokenizer_dir = resolve_tokenizer(tokenizer, repository, model).resolve()
    tok = load_tokenizer(tokenizer_dir)
    metrics_url = _metrics_url(url, metrics_url)

    out = Path(output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / "inputs" / f"{model}.json"
    plan = _Plan(url, model, tool, gp or pa, env, tokenizer_dir, input_tokens, output_tokens,
                 exact_output, backend, seed, timeout_s, data_file,
                 dict(request_inputs or {}))  # fmt: skip
    if tool == "perf_analyzer":
        _write_input_data(plan, tok, max(requests or default_requests(max(levels_wanted)), 16))
    levels = _run_levels(plan, levels_wanted, requests, warmup, out, tok, metrics_url, progress)

    settings: dict[str, Any] = {
        "url": url, "model": model, "tool": tool, "backend": backend if gp else None,
        "concurrency": levels_wanted, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "exact_output": exact_output, "requests": requests,
        "warmup": warmup, "seed": seed, "tokenizer": str(tokenizer_dir),
        "metrics_url": metrics_url, "perf_analyzer": f"{pa} ({pa_version})",
        "genai_perf": str(gp) if gp else None,
        "request_inputs": dict(request_inputs or {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    return _write_report(BenchReport(settings, levels), plan, out, plots)


def _checked_levels(
    concurrency: Sequence[int], tool: str, backend: str, input_tokens: int,
    output_tokens: int, requests: int | None,
) -> list[int]:  # fmt: skip
    """The concurrency levels to run, each once, in the order given.

    Raises:
        UsageError: an unknown tool or backend, no or a non-positive level, too few input
            tokens, or fewer than one output token or request.
    """
    levels = list(dict.fromkeys(int(c) for c in concurrency))
    if tool not in TOOLS:
        raise UsageError(f"unknown tool {tool!r}; choose {' or '.join(TOOLS)}")
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
    if not levels or min(levels) < 1:
        raise UsageError("--concurrency takes positive integers, e.g. 1,2,4,8")
    if input_tokens < 2 or output_tokens < 1 or (requests is not None and requests < 1):
        raise UsageError("--input-tokens must be >= 2, --output-tokens and --requests >= 1")
    return levels


def _write_input_data(plan: _Plan, tokenizer: Any, n_prompts: int) -> None:
    """Write perf_analyzer's ``--input-data``: ``n_prompts`` prompts of the run's length.

    Raises:
        OSError: the file could not be written.
    """
    prompts = make_prompts(tokenizer, plan.input_tokens, n_prompts, plan.seed)
    plan.data_file.parent.mkdir(parents=True, exist_ok=True)
    plan.data_file.write_text(
        json.dumps(entry_input_data(prompts, plan.output_tokens, plan.exact_output, plan.extra))
    )


def _run_levels(
    plan: _Plan, levels: list[int], requests: int | None, warmup: int | None, out: Path,
    tokenizer: Any, metrics_url: str | None, progress: bool,
) -> list[LevelResult]:  # fmt: skip
    """Run every concurrency level in turn, with a progress bar and a line of figures each.

    Raises:
        ToolNotFound, ToolFailed, BenchError: as ``_run_level``.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(levels), desc="perf", unit="level", file=sys.stderr,
               disable=None if progress else True)  # fmt: skip
    results: list[LevelResult] = []
    try:
        for c in levels:
            n = max(requests or default_requests(c), c)
            level = _run_level(plan, c, n, c if warmup is None else warmup, out, tokenizer,
                               metrics_url, bar)  # fmt: skip
            results.append(level)
            bar.update(1)
            f = level.client
            bar.write(
                f"concurrency {c}: {f.output_tokens_per_s:,.0f} output tok/s, "
                f"TTFT p50 {f.time_to_first_token_ms.p50:.1f} ms, "
                f"ITL p50 {f.inter_token_latency_ms.p50:.2f} ms, {f.requests_per_s:.2f} req/s",
                file=sys.stderr,
            )
    finally:
        bar.close()
    return results


def _write_report(report: BenchReport, plan: _Plan, out: Path, plots: bool) -> BenchReport:
    """Write the results, the plots (when ``plots``) and name the input data file.

    Raises:
        OSError: a file could not be written.
    """
    report.write(out)
    if plots:
        from .plots import write_plots

        title = (
            f"{plan.model} via {plan.tool}: {plan.input_tokens} prompt tokens, "
            f"{plan.output_tokens} output tokens"
        )
        for path in write_plots([(lv.concurrency, lv.client) for lv in report.levels], out, title):
            report.files[path.stem] = path
    if plan.data_file.is_file():
        report.files["inputs"] = plan.data_file
    return report


def _metrics_url(url: str, metrics_url: str | None) -> str | None:
    """The metrics endpoint to read: ``metrics_url``, else the ``url`` host on port 8002;
    None (with a warning) when that default does not answer.

    Raises:
        BenchError: an explicit ``metrics_url`` that does not answer.
    """
    if metrics_url is not None:
        scrape(metrics_url)
        return metrics_url
    guess = f"{url.rsplit(':', 1)[0]}:{DEFAULT_METRICS_PORT}"
    try:
        scrape(guess)
    except BenchError as exc:
        print(f"tritonkit perf: warning: no server metrics: {exc}", file=sys.stderr)
        return None
    return guess


def _run_level(
    plan: _Plan, c: int, n: int, warmup: int, out: Path, tokenizer: Any,
    metrics_url: str | None, bar: Any,
) -> LevelResult:  # fmt: skip
    """One tool run at concurrency ``c`` between two reads of the metrics port.

    Raises:
        ToolNotFound, ToolFailed: as ``tools.run_tool``; ToolFailed also for a missing export.
        BenchError: the metrics port stopped answering.
    """
    raw = out / "raw" / f"concurrency{c}"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    started = time.monotonic()

    def tick() -> None:
        bar.set_postfix_str(f"concurrency {c}: {n} requests, {time.monotonic() - started:.0f}s")

    tick()
    before: Samples = scrape(metrics_url) if metrics_url else {}
    tools.run_tool(_command(plan, c, n, warmup, raw), plan.env, raw / f"{plan.tool}.log",
                   plan.timeout_s, tick)  # fmt: skip
    after: Samples = scrape(metrics_url) if metrics_url else {}
    exports = sorted(raw.glob("**/profile_export.json"))
    if not exports:
        raise ToolFailed(f"{plan.tool} wrote no profile_export.json under {raw}")
    records = read_profile_export(exports[0])
    return LevelResult(
        concurrency=c,
        client=figures(records),
        server=server_figures(before, after, plan.model) if metrics_url else None,
        retokenized_output_tokens=Stat.of(
            [float(x) for x in retokenized_counts(records, tokenizer)]
        ),
        tool_reported=_genai_perf_summary(raw),
        raw_dir=raw,
    )
