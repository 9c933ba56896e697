"""What int4 buys and costs: size, quality and decode speed of 4-bit weights, side by side.

    .venv/bin/python benchmarks/quantize_bench.py [--model smollm2] [--repeat 30]

One table in one run, for the model's fused graph (GroupQueryAttention over KV rows,
``FusedDecoder``, exactly as the entry model runs it) in
  * float32 (``tritonkit export onnx``),
  * int4 as ``--quantize int4`` writes it (k-quant blocks of 32, LM head and the most
    sensitive layers in 8 bits), and
  * int4 by plain round-to-nearest (the model builder's default ``-p int4``), the cruder
    scheme the quality bar refuses,
and onnxruntime-genai's ``og.Generator`` on the same int4 graph (the engine a user would
otherwise pick). Columns: weight bytes on disk; teacher-forced top-1 agreement and KL
against float32 PyTorch (export/quality.py, the numbers the export gate reads); the
median decode step at positions 16 and 512 for a batch of 1 and at 512 for a batch of 8;
and each step's speed-up over float32. Medians; this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _table import table
from decode_step_bench import fused_step, median_ms, og_step

from tritonkit.export import main_export
from tritonkit.export.architectures import dims_of
from tritonkit.export.loading import load
from tritonkit.export.quality import evaluate
from tritonkit.export.verify_fused import FusedVerifier
from tritonkit.model_repository.runtime.fused_decoder import CacheShape, FusedDecoder

CELLS = ((1, 16), (1, 512), (8, 512))  # (batch, position)


def builder(hf: Path, out: Path, *options: str) -> Path:
    """onnxruntime-genai's builder, int4 on the CPU with ``options``; the output folder."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
           str(out), "-p", "int4", "-e", "cpu", "-c", str(out.parent / "cache"),
           "--extra_options", "prune_lm_head=true", *options]  # fmt: skip
    subprocess.run(cmd, capture_output=True, check=True)
    return out


def steps(path: Path, dims: Any, repeat: int) -> list[float]:
    shape = CacheShape(dims.num_layers, dims.num_kv_heads, dims.head_dim, 8, 512 + 64)
    decoder = FusedDecoder(str(path / "model.onnx"), shape)
    return [median_ms(fused_step(decoder, b, p), repeat) for b, p in CELLS]


def bench(model: str, repeat: int, work: Path) -> None:
    loaded = load(model, progress=False)
    dims = dims_of(loaded.model.config)
    fp32 = main_export(model, work / "fp32", graph="fused").output
    int4 = main_export(model, work / "int4", quantize="int4").output
    hf = work / "hf"
    loaded.model.save_pretrained(hf)
    loaded.tokenizer.save_pretrained(hf)
    rtn = builder(hf, work / "rtn", "block_size=32")
    og_dir = builder(hf, work / "og", "block_size=32", "algo_config=k_quant_mixed")

    rows: list[list[Any]] = []
    base: list[float] = []
    graphs = [("float32 (ours)", fp32), ("int4 k-quant mixed (ours, --quantize int4)", int4),
              ("int4 round-to-nearest (builder default)", rtn)]  # fmt: skip
    for label, folder in graphs:
        verifier = FusedVerifier(loaded.model, str(folder / "model.onnx"), dims, "float32")
        q = evaluate(loaded.model, loaded.tokenizer, dims.vocab_size, verifier.teacher_forced,
                     "int4")  # fmt: skip
        del verifier
        times = steps(folder, dims, repeat)
        base = base or times
        mb = (folder / "model.onnx.data").stat().st_size / 1e6
        rows.append([label, mb, q.top1, q.kl_mean, q.kl_max, *times,
                     *(b / t for b, t in zip(base, times))])  # fmt: skip
    import onnxruntime_genai as og

    og_model = og.Model(str(og_dir))
    times = [median_ms(og_step(og_model, b, p), min(repeat, 60)) for b, p in CELLS]  # type: ignore[arg-type]
    og_mb = (og_dir / "model.onnx.data").stat().st_size / 1e6
    speedups = [b / t for b, t in zip(base, times)]
    rows.append(["og.Generator, int4 k-quant mixed", og_mb, "same graph", "", "", *times,
                 *speedups])  # fmt: skip

    positions = json.loads((int4 / "export.json").read_text())["quality"]["positions"]
    print(f"\n{model}: fused graph on the CPU; quality on {positions} tokens of text against "
          f"float32 PyTorch; median ms of one decode step over {repeat} steps")  # fmt: skip
    cells = [f"b{b} p{p}" for b, p in CELLS]
    headers = ["graph", "weights MB", "top-1", "KL mean", "KL max",
               *(f"{c} ms" for c in cells), *(f"{c} vs fp32 (x)" for c in cells)]  # fmt: skip
    print(table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeat", type=int, default=30, help="timed steps per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(args.model, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
