"""The cost of constraints: grammar compile time, the mask per token, and served tokens/s.

    .venv/bin/python benchmarks/constraint_bench.py [--export DIR] [--tokens 64] [--requests 4]

Three tables from one run, on SmolLM2-135M-Instruct's 49,152-token vocabulary:

1. Compile: a forced tool call over three realistic functions (nested objects, enums,
   arrays, bounds; the grammar the gateway sends for ``tool_choice: required``) and a
   pydantic-style response schema, compiled by llguidance (what the engine runs) and by
   outlines-core (the regex-index alternative that also needs no torch). xgrammar, the
   third candidate, is not measured: its wheel requires torch and triton, which the
   serving image does not carry.
2. Per token: one step's mask while following a valid answer token by token, and the
   whole per-row cost in the engine (mask, unpacking, applying it to the logits).
3. Served: SmolLM2 on a real Triton, gRPC streaming: tokens/s per request of a
   ``guided_json`` request against the same request unconstrained (both exactly
   ``--tokens`` long), at concurrency 1 and 8. Goal: at most 10% slower per token.

Medians over repeats (this machine is noisy); ratios against llguidance or against the
unconstrained request.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _table import smollm2_export, table

from tritonkit.client import LLMClient
from tritonkit.core.layout import read_export_report
from tritonkit.gateway.tools import Tool, ToolChoice, forcing_grammar
from tritonkit.model_repository import RepositorySpec, build_repository
from tritonkit.model_repository.runtime.constraints import JSON_OPTIONS, Grammars
from tritonkit.serve import TritonServer

TOOLS = [
    Tool("search_flights", "Find flights.", {
        "type": "object",
        "properties": {
            "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "date": {"type": "string", "format": "date"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
            "flexible": {"type": "boolean"},
        },
        "required": ["origin", "destination", "date", "passengers"],
        "additionalProperties": False,
    }),
    Tool("book_hotel", "Book a room.", {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "nights": {"type": "integer", "minimum": 1, "maximum": 30},
            "guests": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name"]}, "maxItems": 4},
            "budget": {"type": "number"},
        },
        "required": ["city", "nights"],
        "additionalProperties": False,
    }),
    Tool("get_weather", "The weather.", {
        "type": "object",
        "properties": {"city": {"type": "string"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    }),
]  # fmt: skip
RESPONSE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer", "minimum": 1800, "maximum": 2100},
        "genres": {"type": "array", "items": {"type": "string", "enum": [
            "drama", "comedy", "thriller", "documentary", "animation"]}},
        "rating": {"type": "number"},
        "cast": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "role": {"type": "string"}},
            "required": ["name", "role"], "additionalProperties": False}},
    },
    "required": ["title", "year", "genres", "cast"],
    "additionalProperties": False,
}  # fmt: skip
ANSWER = {"title": "The River", "year": 1951, "genres": ["drama"], "rating": 7.5,
          "cast": [{"name": "Nora Swinburne", "role": "Valerie"},
                   {"name": "Esmond Knight", "role": "Captain John"}]}  # fmt: skip
# Long enough that the grammar cannot end before --tokens: every request is that long.
LONG = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}},
        "required": ["story"], "additionalProperties": False}  # fmt: skip
PROMPT = "Write a long story about a lighthouse keeper, as JSON."


def median_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# ---- 1 and 2: compile and per-token cost, in process ---------------------------------


def outlines_vocabulary(grammars: Grammars, eos: int) -> Any:
    """outlines-core's vocabulary from the same token bytes llguidance reads."""
    from outlines_core import Vocabulary

    by_bytes: dict[bytes, list[int]] = {}
    for i in range(grammars.vocab_size):
        raw = grammars.token_bytes(i)
        if raw and i != eos and not grammars.tokenizer.is_special_token(i):
            by_bytes.setdefault(raw, []).append(i)
    return Vocabulary(eos, by_bytes)


def compile_table(grammars: Grammars, eos: int, repeat: int) -> list[list[Any]]:
    from outlines_core import Index
    from outlines_core.json_schema import build_regex_from_schema

    tool_grammar = forcing_grammar(TOOLS, ToolChoice("required"), "hermes")
    cases = {
        "forced tool call (3 functions)": ("guided_grammar", tool_grammar),
        "response schema (nested, enums)": ("guided_json", json.dumps(RESPONSE)),
    }
    vocabulary = outlines_vocabulary(grammars, eos)
    rows = []
    for label, (kind, text) in cases.items():
        llg = median_ms(lambda k=kind, t=text: grammars._compile(k, t), repeat)
        if kind == "guided_json":
            regex = build_regex_from_schema(text, r"[ ]?")
            oc = median_ms(lambda r=regex: Index(r, vocabulary), max(1, repeat // 4))
            rows.append([label, f"{llg:.1f}", f"{oc:.0f}", f"{oc / llg:.0f}x"])
        else:  # outlines-core has no grammars with JSON inside: each call's schema alone
            regexes = [build_regex_from_schema(json.dumps(t.parameters), r"[ ]?") for t in TOOLS]
            oc = median_ms(lambda rs=regexes: [Index(r, vocabulary) for r in rs], 1)
            rows.append([label + " *", f"{llg:.1f}", f"{oc:.0f}", f"{oc / llg:.0f}x"])
    return rows


def per_token_table(grammars: Grammars, tokenizer: Any, vocab: int) -> list[list[Any]]:
    from outlines_core import Guide, Index
    from outlines_core.json_schema import build_regex_from_schema

    text = json.dumps(ANSWER)  # json.dumps' separators: what JSON_OPTIONS asks for
    assert JSON_OPTIONS["item_separator"] == ", "
    ids = tokenizer.encode(text).ids
    logits = np.random.default_rng(0).normal(size=vocab).astype(np.float32)

    def llg_steps() -> tuple[float, float]:
        c = grammars.constraint("guided_json", json.dumps(RESPONSE))
        mask_t, total_t = [], []
        for token in ids:
            t0 = time.perf_counter()
            c._lln.fill_next_token_bitmask(c._matcher, c._mask)
            t1 = time.perf_counter()
            allowed = c.allowed()  # what the engine does: the mask again, unpacked ...
            np.where(allowed, logits, -np.inf).astype(np.float32, copy=False)  # ... applied
            t2 = time.perf_counter()
            mask_t.append(t1 - t0)
            total_t.append(t2 - t1)
            assert allowed[token], "the answer must follow the grammar"
            c.consume(token)
        return statistics.median(mask_t) * 1e6, statistics.median(total_t) * 1e6

    regex = build_regex_from_schema(json.dumps(RESPONSE), r"[ ]?")
    index = Index(regex, outlines_vocabulary(grammars, int(tokenizer.token_to_id("<|im_end|>"))))

    def oc_steps() -> tuple[float, float]:
        guide = Guide(index)
        mask = np.zeros((vocab + 31) // 32, dtype=np.int32)
        mask_t, total_t = [], []
        for token in ids:
            t0 = time.perf_counter()
            guide.write_mask_into(mask.ctypes.data, mask.size, 4)
            t1 = time.perf_counter()
            bits = np.unpackbits(mask.view(np.uint8), bitorder="little", count=vocab).view(bool)
            np.where(bits, logits, -np.inf).astype(np.float32, copy=False)
            t2 = time.perf_counter()
            mask_t.append(t1 - t0)
            total_t.append(t2 - t0)
            guide.advance(token, return_tokens=False)
        return statistics.median(mask_t) * 1e6, statistics.median(total_t) * 1e6

    runs = {
        "llguidance": [llg_steps() for _ in range(3)],
        "outlines-core": [oc_steps() for _ in range(3)],
    }
    rows = []
    for name, values in runs.items():  # (mask alone, mask + unpack + apply) per run
        mask = statistics.median(v[0] for v in values)
        total = statistics.median(v[1] for v in values)
        rows.append([name, len(ids), f"{mask:.1f}", f"{total:.1f}"])
    return rows


# ---- 3: served tokens/s ----------------------------------------------------------------


def served(url: str, n: int, requests: int, concurrency: int, **params: Any) -> dict[str, float]:
    """Median per-request decode rate (tokens after the first / their time) and output
    tokens/s of all requests together."""

    def one(_k: int) -> tuple[float, float, int]:
        with LLMClient(url, model="llm") as client:
            r = client.chat([{"role": "user", "content": PROMPT}], on_text=lambda _p: None,
                            max_tokens=n, **params)  # fmt: skip
        assert r.num_output_tokens == n, (r.num_output_tokens, r.finish_reason)
        return r.time_to_first_token_s or 0.0, r.latency_s, n

    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up
        t0 = time.perf_counter()
        runs = list(pool.map(one, range(requests * concurrency)))
        wall = time.perf_counter() - t0
    return {
        "decode": statistics.median((k - 1) / (total - ttft) for ttft, total, k in runs),
        "aggregate": sum(k for *_, k in runs) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--export", type=Path, help="an existing SmolLM2 export (default: export now)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="per worker and concurrency")
    ap.add_argument("--repeat", type=int, default=8, help="compilations per grammar")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export = smollm2_export(args.export, work)
        report = read_export_report(export)
        tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        eos = json.loads((export / "generation.json").read_text())["eos_token_ids"]
        vocab = report.dims.vocab_size
        t0 = time.perf_counter()
        grammars = Grammars((export / "tokenizer.json").read_text(encoding="utf-8"), vocab, eos)
        setup_ms = (time.perf_counter() - t0) * 1e3

        print(f"llguidance's tokenizer for {vocab} tokens: {setup_ms:.0f} ms, once per model "
              "load\n")  # fmt: skip
        print("Compile (ms, median; a grammar is compiled once per distinct text, then cached)")
        print(table(["grammar", "llguidance", "outlines-core", "outlines / llguidance"],
                    compile_table(grammars, eos[0], args.repeat)))  # fmt: skip
        print("* outlines-core: the three argument schemas alone (it has no JSON inside a "
              "grammar)\n")  # fmt: skip
        print("Per token while following a valid answer (us, median)")
        print(table(["library", "tokens", "mask", "mask + apply to the logits"],
                    per_token_table(grammars, tokenizer, vocab)))  # fmt: skip

        repo = build_repository(export, work / "repo", spec=RepositorySpec(sync_instances=1)).path
        with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
            rows = []
            for c in (1, 8):
                free = served(server.grpc_url, args.tokens, args.requests, c,
                              min_tokens=args.tokens, temperature=0)  # fmt: skip
                held = served(server.grpc_url, args.tokens, args.requests, c,
                              guided_json=LONG, temperature=0)  # fmt: skip
                rows.append([c, f"{free['decode']:.1f}", f"{held['decode']:.1f}",
                             f"{held['decode'] / free['decode']:.2f}",
                             f"{free['aggregate']:.1f}", f"{held['aggregate']:.1f}",
                             f"{held['aggregate'] / free['aggregate']:.2f}"])  # fmt: skip
        print(f"\nServed: SmolLM2 on Triton, {args.tokens} tokens per request, greedy")
        print(table(["concurrency", "free tok/s/req", "json_schema tok/s/req", "ratio",
                     "free tok/s", "json_schema tok/s", "ratio"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
