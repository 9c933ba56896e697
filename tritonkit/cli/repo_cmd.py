"""``tritonkit repo build|validate``: forwards to ``tritonkit.model_repository``."""

from __future__ import annotations

import argparse
from typing import Any

from tritonkit.errors import RepositoryError
from tritonkit.model_repository.gpus import DEFAULT_GPU, DEFAULT_UTILIZATION, GPUS

BUILD_HELP = """\
Assemble a Triton model repository from an export folder:
  NAME          the entry model (python backend, decoupled): tokenizes, generates with
                in-flight batching over the decoder in-process, streams text
  NAME_decoder  the same ONNX graph as a standalone model (weights stored once), for
                perf_analyzer and direct calls: python backend on --target cpu,
                Triton's onnxruntime_onnx platform on KIND_GPU for --target gpu

On --target gpu the KV cache is allocated whole at load, so its context is sized from
the GPU's memory (--gpu, --gpu-memory-utilization) after the weights, like vLLM's
gpu_memory_utilization, and the build refuses a graph the GPU image cannot load (a fused
graph exported for the CPU, or one newer than the image's onnxruntime).

With --engine vllm the entry model serves the same interface over vLLM's engine, from a
`tritonkit export hf` folder (no decoder model; vLLM runs the weights itself), and
`tritonkit serve` runs it in vLLM's own environment (.venv-vllm, made by make setup).

examples:
  tritonkit repo build --export out/tiny-llama --output out/repo
  tritonkit export hf --model smollm2 --output out/smollm2-hf
  tritonkit repo build --engine vllm --export out/smollm2-hf --output out/repo-vllm
  tritonkit repo build --export out/qwen --output out/repo-gpu --target gpu --name qwen
  tritonkit repo build --export out/qwen --output out/repo-a100 --target gpu --gpu a100 \
      --max-batch-size 32
"""


def add_parser(sub: Any) -> None:
    repo = sub.add_parser("repo", help="build or validate a Triton model repository")
    verbs = repo.add_subparsers(dest="verb", metavar="VERB", required=True)

    b = verbs.add_parser(
        "build",
        help="assemble a model repository from an export",
        description=BUILD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--export", required=True, metavar="DIR",
        help="a `tritonkit export onnx` folder (`export hf` for --engine vllm)",
    )  # fmt: skip
    b.add_argument("--output", required=True, metavar="REPO", help="repository folder to write")
    b.add_argument("--name", default="llm", help="entry model name (default llm)")
    b.add_argument("--target", default="cpu", choices=["cpu", "gpu"], help="default cpu")
    b.add_argument("--version", type=int, default=1, help="model version number (default 1)")
    b.add_argument(
        "--max-batch-size", type=int, default=16, help="sequences per decode step (default 16)"
    )
    b.add_argument(
        "--max-context", type=int, metavar="TOKENS",
        help="tokens per request, prompt plus answer (default: the model's); sizes each row "
        "of the KV cache, which a GPU allocates whole: rows x max-context",
    )  # fmt: skip
    b.add_argument(
        "--gpu", choices=sorted(GPUS),
        help=f"gpu target: the GPU it serves on, whose memory sizes the KV cache (default "
        f"{DEFAULT_GPU}: {', '.join(f'{k} {g.memory_gib:g} GiB' for k, g in GPUS.items())})",
    )  # fmt: skip
    b.add_argument(
        "--gpu-memory-utilization", type=float, default=DEFAULT_UTILIZATION, metavar="FRACTION",
        help=f"gpu target: the share of GPU memory for weights and KV cache (default "
        f"{DEFAULT_UTILIZATION})",
    )  # fmt: skip
    b.add_argument(
        "--prefill-chunk", type=int, metavar="TOKENS",
        help="prompt tokens read per step at most while streams run (4x that when none "
        "does), so running streams keep flowing while a long prompt is read (default 128)",
    )  # fmt: skip
    b.add_argument(
        "--stall-factor", type=float, metavar="X",
        help="while streams run, read a prompt in chunks sized from measured costs so a "
        "stream's gap stays near X decode steps; larger: long prompts start sooner, streams "
        "stutter more (default 4.5)",
    )  # fmt: skip
    b.add_argument(
        "--prefix-cache", action=argparse.BooleanOptionalAction, default=True,
        help="keep a finished request's KV row for later prompts that start the same way "
        "(a chat's history, an agent's system prompt): they skip prefilling it (default on; "
        "fused graph)",
    )  # fmt: skip
    b.add_argument(
        "--tensorrt-accelerator", action="store_true", default=None,
        help="gpu target: let onnxruntime use its TensorRT execution provider (FP16)",
    )  # fmt: skip
    b.add_argument(
        "--engine", default="onnxruntime", type=_engine, metavar="ENGINE",
        help="what generates: onnxruntime (tritonkit's engine over an `export onnx` folder; "
        "default), tensorrt (gpu target: the decoder as a TensorRT plan, needs --plan) or "
        "vllm (vLLM over an `export hf` folder)",
    )  # fmt: skip
    b.add_argument(
        "--plan", metavar="DIR", help="--engine tensorrt: a `tritonkit export tensorrt` folder"
    )
    b.add_argument("--backend", choices=["onnxruntime", "tensorrt"], help=argparse.SUPPRESS)
    b.add_argument(
        "--cpu-kv-cache-gib", type=float, metavar="GIB",
        help="--engine vllm on the CPU: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE; default 1)",
    )  # fmt: skip
    b.add_argument(
        "--dtype", choices=["auto", "float32", "float16", "bfloat16"],
        help="--engine vllm: the weights' dtype (default float32 on cpu, the model's on gpu)",
    )  # fmt: skip
    b.add_argument("--force", action="store_true", help="replace a non-empty REPO")
    b.add_argument(
        "--allow-unverified", action="store_true", help="accept an export that failed verification"
    )
    b.set_defaults(handler=_build)

    v = verbs.add_parser(
        "validate",
        help="check every config and file of a repository",
        description="Parse every config.pbtxt with Triton's ModelConfig schema and check "
        "versions, files and I/O consistency. Exits 1 when a check fails.",
    )
    v.add_argument("repository", metavar="REPO")
    v.set_defaults(handler=_validate)

    e = verbs.add_parser(
        "engine",
        help="print the engine an entry model was built for",
        description="Print onnxruntime or vllm: the engine MODEL in REPO was built for "
        "(`repo build --engine`; tensorrt builds run on onnxruntime's image). The Triton "
        "image's entrypoint runs this before starting Triton, so an image of the other "
        "engine refuses the repository with a one-line reason instead of failing the load.",
    )
    e.add_argument("repository", metavar="REPO")
    e.add_argument("--model", default="llm", help="the entry model (default llm)")
    e.set_defaults(handler=_engine_of)


def _engine(value: str) -> str:
    """``--engine``'s value: an engine name (a folder is the old spelling of ``--plan``)."""
    from tritonkit.model_repository.spec import ENGINES

    if value in ENGINES:
        return value
    hint = ": the TensorRT folder now goes in --plan DIR" if "/" in value else ""
    raise argparse.ArgumentTypeError(f"unknown engine {value!r}; choose {', '.join(ENGINES)}{hint}")


def _build(args: argparse.Namespace) -> int:
    from tritonkit.errors import UsageError
    from tritonkit.model_repository import (
        RepositorySpec,
        build_repository,
        engine_spec,
        validate_repository,
    )
    from tritonkit.model_repository.spec import foreign_options

    spec = RepositorySpec(
        name=args.name,
        target=args.target,
        version=args.version,
        max_batch_size=args.max_batch_size,
        max_context=args.max_context,
        prefix_cache=args.prefix_cache,
        allow_unverified=args.allow_unverified,
    )
    kind = "tensorrt" if args.backend == "tensorrt" else args.engine
    # Engine options default to None here (the spec holds the defaults), so a set one shows.
    foreign = foreign_options(kind, {k: v for k, v in vars(args).items() if v is not None})
    if foreign:
        flags = ", ".join("--" + f.replace("_", "-") for f in foreign)
        raise UsageError(f"{flags} do(es) not apply to --engine {kind}; drop them")
    engine = engine_spec(kind, **vars(args))
    built = build_repository(args.export, args.output, engine, spec, force=args.force)
    report = validate_repository(built.path)
    print(report.table())
    decoder = f", decoder {built.decoder_model!r}" if built.decoder_model else ""
    print(
        f"\nbuilt {built.path} ({built.target}, engine {built.engine}): entry model "
        f"{built.entry_model!r}{decoder}, version {built.version}"
    )
    if built.kv_plan is not None:
        print(f"GPU budget: {built.kv_plan.describe()}")
    if built.kv_cache_bytes:
        where = (
            "device memory, allocated at load" if built.target == "gpu" else "memory, as rows fill"
        )
        print(
            f"KV cache: {built.kv_cache_bytes / 2**30:.2f} GiB per instance when every row is "
            f"full ({where}); --max-context and --max-batch-size size it"
        )
    print(f"serve it:  tritonkit serve --repository {built.path}")
    return 0 if report.ok else 1


def _engine_of(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from tritonkit.errors import UsageError
    from tritonkit.model_repository import config as cfg

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", args.model):
        raise UsageError(f"--model {args.model!r} is not a model name (letters, digits, _ -)")
    print(cfg.engine_of(cfg.read(Path(args.repository) / args.model)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from tritonkit.model_repository import validate_repository

    report = validate_repository(args.repository)
    print(report.table())
    if not report.ok:
        failed = report.failures[0]
        raise RepositoryError(
            f"{len(report.failures)} check(s) failed, first: {failed.model}: {failed.check} "
            f"{failed.detail}".rstrip()
        )
    print(f"\n{report.path}: all {len(report.findings)} checks passed")
    return 0
