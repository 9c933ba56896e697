"""``tritonkit export onnx``: forwards to ``tritonkit.export.main_export``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tritonkit.errors import VerificationError

from ._progress import stages

HELP = """\
Export a Hugging Face causal LM to one ONNX decoder with KV cache (prefill and
decode in one graph), then verify it against PyTorch: logits and every present.*
at batch 1 and 3, past 0 and > 0, one and many new tokens, a left-padded batch,
and a greedy decode that must equal transformers' generate token for token.
A failed check exits 1; the full report is OUTPUT/export.json.

examples:
  tritonkit export onnx --model tiny-llama --output out/tiny-llama
  tritonkit export onnx --model ./my-llama --output out/my-llama --dtype float16 --device cuda
  tritonkit export onnx --model Qwen/Qwen2.5-0.5B-Instruct --output out/qwen --force
"""


TRT_HELP = """\
Build a TensorRT engine from a verified ONNX export, on the GPU that will serve it
(engines are tied to the GPU and the TensorRT version). Two optimization profiles,
prefill and decode, keep past + current length equal to the mask length. The engine
is verified against onnxruntime at the same check points as the ONNX export;
OUT/tensorrt.json is the report. Without a CUDA GPU or the tensorrt package this
stops with a one-line error.

examples:
  tritonkit export tensorrt --export out/qwen --output out/qwen-trt --fp16
  tritonkit repo build --export out/qwen --engine out/qwen-trt --backend tensorrt \\
      --target gpu --output out/repo
"""


def add_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="export a model (ONNX now, TensorRT on a GPU)")
    kinds = export.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = kinds.add_parser(
        "onnx",
        help="export and verify an ONNX decoder with KV cache",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="SRC",
        help="hub id, local folder (config.json, weights, tokenizer), or 'tiny-llama' "
        "(the embedded 2M-parameter random Llama)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="weights and KV cache dtype (default float32; float16 for GPUs)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to export")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUTPUT")
    p.add_argument(
        "--new-tokens", type=int, default=32, help="greedy decode length to verify (default 32)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)

    t = kinds.add_parser(
        "tensorrt",
        help="build a TensorRT engine from an ONNX export (on the serving GPU)",
        description=TRT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--export", required=True, metavar="DIR", help="a `tritonkit export onnx` folder"
    )
    t.add_argument("--output", required=True, metavar="OUT", help="folder for model.plan")
    precision = t.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", dest="precision", const="fp16")
    precision.add_argument("--bf16", action="store_const", dest="precision", const="bf16")
    t.add_argument("--max-batch", type=int, default=8, help="largest batch (default 8)")
    t.add_argument("--max-context", type=int, help="longest sequence (default: the model's)")
    t.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    t.set_defaults(handler=_run_tensorrt, precision="fp32")


def _summary(report: dict[str, Any]) -> str:
    lines = [f"{'check':34} {'max abs diff':>12} {'atol':>8}  result"]
    for c in report["checks"]:
        mark = "ok" if c["passed"] else "FAIL"
        lines.append(f"{c['name']:34} {c['max_abs_diff']:12.3g} {c['atol']:8.0e}  {mark}")
    g = report.get("greedy")
    if g is None:
        return "\n".join(lines)
    lines.append(
        f"{'greedy decode ' + str(g['new_tokens']) + ' tokens':34} "
        f"{'':>12} {'':>8}  {'match' if g['match'] else 'MISMATCH'}"
    )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from tritonkit.export import main_export
    from tritonkit.export.verify import CHECK_POINTS

    total = 2 + len(CHECK_POINTS) + 1
    try:
        with stages(total, "export", enabled=not args.quiet) as say:
            result = main_export(
                args.model,
                args.output,
                dtype=args.dtype,
                opset=args.opset,
                device=args.device,
                force=args.force,
                new_tokens=args.new_tokens,
                progress=say,
            )
    except VerificationError:
        report_path = f"{args.output}/export.json"
        try:
            with open(report_path) as f:
                print(_summary(json.load(f)))
        except OSError:
            pass
        raise
    r = result.report
    print(_summary(r))
    print(
        f"\n{r['architecture']} {r['dtype']} -> {result.output}/model.onnx  "
        f"passed={str(r['passed']).lower()} greedy_match={str(r['greedy_match']).lower()}  "
        f"(export {r['timings_s']['export']:.1f}s, verify {r['timings_s']['verify']:.1f}s)"
    )
    return 0


def _run_tensorrt(args: argparse.Namespace) -> int:
    from tritonkit.export.tensorrt import build_engine

    with stages(2 + 8, "tensorrt") as say:
        report = build_engine(
            args.export,
            args.output,
            precision=args.precision,
            max_batch=args.max_batch,
            max_context=args.max_context,
            force=args.force,
            progress=say,
        )
    print(_summary(report))
    print(f"\n{args.output}/model.plan  passed={str(report['passed']).lower()}")
    return 0
