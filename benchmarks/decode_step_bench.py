"""What one decode step costs as the cache grows: concat graph vs fused graph vs og.Generator.

    .venv/bin/python benchmarks/decode_step_bench.py [--models smollm2 tiny-llama]

For each model, one table in one run: the median time of one decode step (one new token
for every row) at positions 16, 512 and 1024, for a batch of 1 and of 8, through
  * the concat graph (our torch.export graph; the cache is concatenated into new present
    tensors every step) in-process with onnxruntime (``OnnxDecoder``);
  * the fused graph (GroupQueryAttention over preallocated KV rows, ``FusedDecoder``),
    exactly as the entry model runs it;
  * onnxruntime-genai's ``og.Generator`` on its own builder graph (the engine a user
    would otherwise pick for ONNX LLMs on a CPU).
Ratios: the step at position 1024 against the same engine's step at position 16 (same
batch), and each engine's speed-up over the concat graph at position 1024. Medians; this
machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _table import table

from tritonkit.export import main_export
from tritonkit.model_repository.runtime.decoder import OnnxDecoder
from tritonkit.model_repository.runtime.fused_decoder import CacheShape, FusedDecoder

POSITIONS = (16, 512, 1024)
BATCHES = (1, 8)


def median_ms(step: Callable[[], Any], repeat: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def concat_step(
    decoder: OnnxDecoder, batch: int, position: int, rng: np.random.Generator
) -> Callable[[], Any]:
    s = decoder.spec
    past = [rng.standard_normal((batch, s.num_kv_heads, position, s.head_dim)).astype(np.float32)
            for _ in range(2 * s.num_layers)]  # fmt: skip
    ids = np.full((batch, 1), 7, np.int64)  # (B, 1)
    mask = np.ones((batch, position + 1), np.int64)  # (B, P+1)
    pos = np.full((batch, 1), position, np.int64)
    return lambda: decoder.forward(ids, mask, pos, past)


def fused_step(decoder: FusedDecoder, batch: int, position: int) -> Callable[[], Any]:
    slots = list(range(batch))

    def step() -> Any:
        decoder.lengths[:batch] = position  # rows hold `position` tokens; each step adds one
        return decoder.decode(slots, [7] * batch)

    return step


def og_step(model: Any, batch: int, position: int) -> Callable[[], Any] | None:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=position + 64, do_sample=False, batch_size=batch)
    gen = og.Generator(model, params)
    gen.append_tokens(np.full((batch, position), 7, np.int32))  # (B, P): the prompt

    def step() -> Any:
        gen.generate_next_token()

    return step


def bench(model: str, repeat: int, work: Path) -> None:
    from tritonkit.export.loading import load

    fused_dir = main_export(model, work / "fused", graph="fused").output
    concat_dir = main_export(model, work / "concat", graph="concat").output
    dims = json.loads((fused_dir / "export.json").read_text())["dims"]
    concat = OnnxDecoder(str(concat_dir / "model.onnx"))
    shape = CacheShape(dims["num_layers"], dims["num_kv_heads"], dims["head_dim"], max(BATCHES),
                       max(POSITIONS) + 64)  # fmt: skip
    fused = FusedDecoder(str(fused_dir / "model.onnx"), shape)

    loaded = load(model, progress=False)
    hf = work / "hf"
    loaded.model.save_pretrained(hf)
    loaded.tokenizer.save_pretrained(hf)
    og_model = None
    build = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf),
             "-o", str(work / "og"), "-p", "fp32", "-e", "cpu"]  # fmt: skip
    if subprocess.run(build, capture_output=True).returncode == 0:
        import onnxruntime_genai as og

        og_model = og.Model(str(work / "og"))

    rng = np.random.default_rng(0)
    results: dict[tuple[str, int, int], float] = {}
    for batch in BATCHES:
        for position in POSITIONS:
            results["concat", batch, position] = median_ms(
                concat_step(concat, batch, position, rng), repeat
            )
            results["fused", batch, position] = median_ms(
                fused_step(fused, batch, position), repeat
            )
            if og_model is not None:
                step = og_step(og_model, batch, position)
                results["og", batch, position] = median_ms(step, min(repeat, 60))  # type: ignore[arg-type]
    names = {"concat": "concat graph (torch.export)", "fused": "fused graph, KV rows (ours)",
             "og": "onnxruntime-genai og.Generator"}  # fmt: skip
    rows = []
    for engine, label in names.items():
        for batch in BATCHES:
            if (engine, batch, 16) not in results:
                continue
            times = [results[engine, batch, p] for p in POSITIONS]
            rows.append([label, batch, *times, times[-1] / times[0],
                         results["concat", batch, 1024] / times[-1]])  # fmt: skip
    print(f"\n{model}: one decode step, float32, CPU; median ms over {repeat} steps")
    headers = ["engine", "batch", *(f"p{p} ms" for p in POSITIONS), "p1024 / p16 (x)",
               "speed-up vs concat at p1024 (x)"]  # fmt: skip
    print(table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2", "tiny-llama"])
    parser.add_argument("--repeat", type=int, default=30, help="timed steps per cell")
    args = parser.parse_args()
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            bench(model, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
