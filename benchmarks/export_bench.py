"""Export time, and onnxruntime vs PyTorch forward latency on tiny-llama.

    .venv/bin/python benchmarks/export_bench.py [--model tiny-llama] [--prompt 128]

Prints one table: median latency of a prefill (past 0) and of one decode step
(past = prompt length), PyTorch eager vs onnxruntime on the torch.export ("concat")
graph, with the ratio side by side; the fused-attention graph, which serves Llama-family
models by default, is timed in decode_step_bench.py. Medians: this machine is noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _table import median_seconds, table

from tritonkit.export import main_export
from tritonkit.export.loading import load
from tritonkit.model_repository.runtime.decoder import OnnxDecoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--prompt", type=int, default=128, help="prefill length in tokens")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = main_export(args.model, Path(tmp) / "export", graph="concat")
        export_s = time.perf_counter() - t0
        decoder = OnnxDecoder(str(result.output / "model.onnx"))
        model = load(args.model).model
        vocab = result.report["dims"]["vocab_size"]

        n = args.prompt
        ids = np.random.default_rng(0).integers(0, vocab, (1, n))  # (1, n)
        mask = np.ones((1, n), np.int64)
        pos = np.arange(n)[None]
        _, presents = decoder.forward(ids, mask, pos, decoder.empty_past(1))
        past_np = [p if isinstance(p, np.ndarray) else p.numpy() for p in presents]
        step_ids, step_mask, step_pos = ids[:, -1:], np.ones((1, n + 1), np.int64), np.array([[n]])

        t_ids, t_mask, t_pos = (torch.from_numpy(a) for a in (ids, mask, pos))
        with torch.no_grad():
            cache = model(t_ids, attention_mask=t_mask, position_ids=t_pos, use_cache=True)
        kv = getattr(cache, "cache", None) or cache.past_key_values

        def torch_prefill() -> None:
            with torch.no_grad():
                model(t_ids, attention_mask=t_mask, position_ids=t_pos, use_cache=True)

        def torch_decode() -> None:
            import copy

            with torch.no_grad():
                model(
                    torch.from_numpy(step_ids),
                    attention_mask=torch.from_numpy(step_mask),
                    position_ids=torch.from_numpy(step_pos),
                    past_key_values=copy.copy(kv),
                    use_cache=True,
                )

        def ort_prefill() -> None:
            decoder.forward(ids, mask, pos, decoder.empty_past(1))

        def ort_decode() -> None:
            decoder.forward(step_ids, step_mask, step_pos, past_np)

        rows = []
        for name, t_fn, o_fn in (
            (f"prefill {n} tokens", torch_prefill, ort_prefill),
            (f"decode 1 token (past {n})", torch_decode, ort_decode),
        ):
            t_ms = median_seconds(t_fn, args.repeat) * 1e3
            o_ms = median_seconds(o_fn, args.repeat) * 1e3
            rows.append([name, t_ms, o_ms, t_ms / o_ms])

    print(
        f"model {args.model}; export + verification took {export_s:.1f} s "
        f"(export {result.report['timings_s']['export']:.1f} s)"
    )
    print(table(["forward", "PyTorch ms", "onnxruntime ms", "speed-up (x)"], rows))


if __name__ == "__main__":
    main()
