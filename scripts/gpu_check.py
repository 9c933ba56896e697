"""GPU check: the GPU path as the GPU image runs it, on a machine with a CUDA GPU.

Run by scripts/gpu_check.sh (which prepares an environment with the GPU image's versions
from tritonkit/versions.py when it can). Every step prints one row, what ran and what it
showed, or why it failed or was skipped; no step's failure stops the others, and the
exit code is 1 when any row failed. Rows:

    the environment's onnxruntime is the image's (onnxruntime-gpu VERSION alone, CUDA provider)
    a CUDA GPU is visible to PyTorch
    export tiny-llama on CUDA in float16: the fused graph, verified against PyTorch there
    export on CUDA in float32: auto must choose the concat graph, verified the same way
    repo build --target gpu of the float16 export (the configs the image loads)
    the entry model's engine on the GPU (strict: no CPU fallback), greedy equal to the
        export's own greedy tokens, and a decode step timed at positions 16 and 1024
    transformers generate on CUDA vs the engine, tokens/s
    TensorRT: an engine from the float32 concat export, verified against onnxruntime
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
rows: list[tuple[str, str, str]] = []
LOG: list[str] = []  # each failed check's traceback, written to WORKDIR/gpu_check.log


def row(check: str, result: str, detail: str = "") -> None:
    rows.append((check, result, detail))
    print(f"{check:52} {result:8} {detail}", flush=True)


def step(name: str, fn: Callable[[], str]) -> bool:
    """Run one check; its row is ok with what ``fn`` returns, FAIL with the first line of
    what it raised, or skipped when it raises ``Skip``."""
    try:
        detail = fn()
    except Skip as exc:
        row(name, "skipped", str(exc))
        return True
    except Exception as exc:  # one line per failed check, the trace on stderr
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        row(name, "FAIL", first[:200])
        LOG.append(f"== {name}\n{traceback.format_exc()}")
        return False
    row(name, "ok", detail)
    return True


class Skip(Exception):
    """A check that cannot run here (and is not a failure of the GPU path)."""


def check_environment() -> str:
    """The onnxruntime here must be the image's: onnxruntime-gpu alone, at its version."""
    import onnxruntime as ort

    from tritonkit.export.compat import onnxruntime_conflict, onnxruntime_distributions
    from tritonkit.versions import ONNXRUNTIME

    dists = onnxruntime_distributions()
    conflict = onnxruntime_conflict(dists)
    if conflict:
        raise RuntimeError(conflict)
    if dists != ["onnxruntime-gpu"] or ort.__version__ != ONNXRUNTIME:
        raise RuntimeError(
            f"found {', '.join(dists) or 'no onnxruntime'} {ort.__version__}; the GPU image "
            f"runs onnxruntime-gpu {ONNXRUNTIME} (GPU_CHECK_SETUP=1 bash scripts/gpu_check.sh)"
        )
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise RuntimeError(f"onnxruntime-gpu lists no CUDA provider: {providers}")
    return f"providers {providers}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where exports and the report go (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    from tritonkit.versions import ONNXRUNTIME

    ok = step(f"onnxruntime-gpu {ONNXRUNTIME} alone (the image's)", check_environment)
    ok &= run_gpu_checks(work)
    (work / "gpu_check.json").write_text(json.dumps(rows, indent=2))
    (work / "gpu_check.log").write_text("\n".join(LOG))
    print(f"\nreport: {work / 'gpu_check.json'} (tracebacks of failed checks: gpu_check.log)")
    return 0 if ok else 1


def run_gpu_checks(work: Path) -> bool:
    """Everything after the environment row; False when any row failed."""
    state: dict[str, Any] = {}

    def gpu() -> str:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False: no GPU to check")
        torch.backends.cuda.matmul.allow_tf32 = False  # compare with fp32 CPU kernels
        torch.backends.cudnn.allow_tf32 = False
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm{props.major}{props.minor}"

    if not step("CUDA GPU visible to PyTorch", gpu):
        return False

    def export(dtype: str, expect: str) -> Callable[[], str]:
        def run() -> str:
            from tritonkit.export import main_export

            t0 = time.perf_counter()
            result = main_export("tiny-llama", work / dtype, dtype=dtype, device="cuda", force=True)
            r = result.report
            if r["graph"] != expect:
                raise RuntimeError(f"auto chose the {r['graph']} graph, expected {expect}")
            state[dtype] = result.output
            worst = max(c["onnx_err"] / c["limit"] for c in r["checks"])
            return (
                f"{r['graph']} graph, worst error {worst:.2f} of its limit, greedy_match="
                f"{r['greedy_match']}, min onnxruntime {r.get('min_onnxruntime')}, "
                f"{time.perf_counter() - t0:.1f}s"
            )

        return run

    ok = step("export on cuda, float16 (fused): checks vs PyTorch", export("float16", "fused"))
    ok &= step("export on cuda, float32 (concat): checks vs PyTorch", export("float32", "concat"))

    def repo() -> str:
        if "float16" not in state:
            raise Skip("the float16 export failed")
        from tritonkit.model_repository import RepositorySpec, build_repository, validate_repository

        built = build_repository(
            state["float16"], work / "repo", spec=RepositorySpec(target="gpu"), force=True
        )
        report = validate_repository(built.path)
        if not report.ok:
            raise RuntimeError(report.failures[0])
        state["repo"] = built
        return built.kv_plan.describe() if built.kv_plan else ""

    ok &= step("repo build --target gpu (float16 fused)", repo)
    ok &= step("entry model's engine on cuda: greedy, decode step", lambda: engine(state))
    ok &= step("transformers generate on cuda vs the engine", lambda: generate_speed(state))
    ok &= step("TensorRT engine from the float32 concat export", lambda: tensorrt(state, work))
    ok &= step("vLLM on cuda: greedy equal to transformers'", lambda: vllm_engine(work))
    return ok


def engine(state: dict[str, Any]) -> str:
    """The engine exactly as the entry model opens it on a GPU instance."""
    import numpy as np

    from tritonkit.core.layout import read_export_report
    from tritonkit.model_repository.runtime.engines import open_engine

    if "float16" not in state:
        raise Skip("the float16 export failed")
    folder = state["float16"]
    report = read_export_report(folder)
    eng = open_engine(
        str(folder / "model.onnx"),
        report,
        max_rows=8,
        max_context=1100,
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    from transformers import AutoTokenizer

    from tritonkit.export.onnx_export import GREEDY_PROMPT

    prompt = list(AutoTokenizer.from_pretrained(folder)(GREEDY_PROMPT)["input_ids"])
    expected = report.raw["greedy"]["onnx_tokens"]  # what the export's own run gave
    slot = eng.reserve()
    tokens = [int(eng.prefill(slot, prompt).argmax())]
    while len(tokens) < len(expected):
        tokens.append(int(eng.decode([slot], [tokens[-1]])[0].argmax()))
    eng.release(slot)
    if tokens != expected:
        raise RuntimeError(f"greedy differs from the export's: {tokens[:8]} vs {expected[:8]}")
    decoder = eng.decoder  # type: ignore[attr-defined]
    times = {}
    for position in (16, 1024):
        samples = []
        for _ in range(30):
            decoder.lengths[:8] = position
            t1 = time.perf_counter()
            decoder.decode(list(range(8)), [7] * 8)
            samples.append(time.perf_counter() - t1)
        times[position] = statistics.median(samples[5:]) * 1e3
    state["engine_tokens"] = len(tokens)
    return (
        f"greedy equal ({len(tokens)} tokens); batch-8 step p16 {times[16]:.2f} ms, "
        f"p1024 {times[1024]:.2f} ms ({times[1024] / times[16]:.2f}x); "
        f"KV rows {np.dtype(decoder.shape.dtype).name}"
    )


def generate_speed(state: dict[str, Any]) -> str:
    import torch

    from tritonkit.export.loading import load

    loaded = load("tiny-llama", device="cuda")
    ids = torch.tensor([loaded.tokenizer("The quick brown fox")["input_ids"]], device="cuda")
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loaded.model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return f"transformers {64 / statistics.median(times[1:]):.0f} tokens/s at batch 1"


def tensorrt(state: dict[str, Any], work: Path) -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Skip("no tensorrt package here (the compose `engine` service has it)") from None
    if "float32" not in state:
        raise Skip("the float32 export failed")
    from tritonkit.export.tensorrt import build_engine

    report = build_engine(state["float32"], work / "trt", precision="fp16", force=True)
    worst = max(c["max_abs_diff"] for c in report["checks"])
    return f"TensorRT {report['tensorrt']}, built in {report['build_s']} s, worst diff {worst:.3g}"


def vllm_engine(work: Path) -> str:
    """The second engine: tiny-llama imported as `export hf` does, then vLLM's own greedy
    continuation of the import's probe against transformers' (in its report)."""
    try:
        import vllm
    except ImportError:
        raise Skip("no vllm package here (NGC's -vllm-python-py3 image has it)") from None
    from tritonkit.export.hf_import import import_hf

    imported = import_hf("tiny-llama", work / "hf", force=True, progress=False)
    check = imported.report["verification"]
    llm = vllm.LLM(model=str(imported.output), dtype="float32", max_model_len=256,
                   gpu_memory_utilization=0.3)  # fmt: skip
    params = vllm.SamplingParams(temperature=0, max_tokens=len(check["greedy_ids"]),
                                 ignore_eos=True)  # fmt: skip
    prompt = vllm.inputs.TokensPrompt(prompt_token_ids=check["probe_ids"])
    got = list(llm.generate([prompt], params)[0].outputs[0].token_ids)
    if got != check["greedy_ids"]:
        raise RuntimeError(f"vLLM {got} != transformers {check['greedy_ids']}")
    return f"vLLM {vllm.__version__}: {len(got)} greedy tokens equal"


if __name__ == "__main__":
    sys.exit(main())
