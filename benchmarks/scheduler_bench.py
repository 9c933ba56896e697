"""A long prompt arriving among running streams: the streams' largest gap and the long
prompt's own time to first token, fixed 128-token prefill chunks against the budget
sized from measured costs (``scheduler.STALL_FACTOR``). SmolLM2, the engine Triton runs,
in process (the scheduler alone, no server noise).

    .venv/bin/python benchmarks/scheduler_bench.py [--export DIR] [--words 1000] [--reps 3]

Goals (issue 22): the largest gap at most 5x the stream's median gap, and the long
prompt's first token at most 1.2x later than with fixed chunks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _table import smollm2_export, table
from tokenizers import Tokenizer

from tritonkit.core.layout import read_export_report
from tritonkit.core.params import parse_request
from tritonkit.model_repository.runtime import scheduler as sched
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.model_repository.runtime.generation import GenerationRequest

TEXT = (
    "the harbour office opens at dawn and every captain files a manifest before the "
    "crew goes ashore while the cargo waits on the quay"
)
WORDS = TEXT.split(" ")


def request(tok: Tokenizer, eos: list[int], prompt: str, tokens: int) -> GenerationRequest:
    fields = {"text_input": np.array([prompt.encode()], np.object_),
              "max_tokens": np.array([tokens], np.int32),
              "min_tokens": np.array([tokens], np.int32)}  # fmt: skip
    params = parse_request(fields)
    return GenerationRequest(params, tok.encode(prompt).ids, tok, eos, 4096, emit=lambda o: None)


def one(export: Path, words: int, factor: float) -> tuple[float, float]:
    """(largest gap / median gap of a running stream, long prompt TTFT in s)."""
    report = read_export_report(export)
    tok = Tokenizer.from_file(str(export / "tokenizer.json"))
    eos = json.loads((export / "generation.json").read_text())["eos_token_ids"]
    engine = open_engine(str(export / report.model_file), report, 4, 4096, prefix_cache=False)
    s = sched.Scheduler(engine, max_batch_size=4, prefill_chunk=128, stall_factor=factor)
    stream = request(tok, eos, "Tell me a story about the sea.", 400)
    s.submit(stream)
    for _ in range(25):
        s.run_once()
    long = request(tok, eos, " ".join(WORDS[i % len(WORDS)] for i in range(words)), 1)
    arrived = time.perf_counter()
    s.submit(long)
    while long.timing.first_token is None:
        s.run_once()
    ttft = long.timing.first_token - arrived
    for _ in range(10):
        s.run_once()
    gaps = stream.timing.inter_token
    return max(gaps) / statistics.median(gaps), ttft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--export", type=Path, help="an existing SmolLM2 export (default: export now)")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--factors", default="", help="more STALL_FACTORs to try, e.g. 6,8")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = smollm2_export(args.export, Path(tmp))
        default = sched.STALL_FACTOR
        factors = {"fixed 128-token chunks": 1e9}  # 128 whenever streams run
        factors[f"budget, stall factor {default:g} (the default)"] = default
        for f in filter(None, args.factors.split(",")):
            factors[f"budget, stall factor {float(f):g}"] = float(f)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in factors}
        for _ in range(args.reps):  # alternated, so drifts in the machine hit all
            for name, factor in factors.items():
                runs[name].append(one(export, args.words, factor))
    rows = []
    base = statistics.median(t for _, t in runs["fixed 128-token chunks"])
    for label in factors:
        name = label
        gap = statistics.median(g for g, _ in runs[name])
        ttft = statistics.median(t for _, t in runs[name])
        rows.append([label, f"{gap:.1f}", f"{ttft * 1e3:.0f}", f"{ttft / base:.2f}"])
    print(f"A {args.words}-word prompt arriving while a SmolLM2 stream runs (in process)")
    print(table(["prefill", "largest gap / median gap (x)", "long prompt TTFT ms", "vs fixed"],
                rows))  # fmt: skip


if __name__ == "__main__":
    main()
