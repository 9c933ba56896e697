"""``build_engine``: a verified ONNX export -> a TensorRT engine, verified against onnxruntime.

Engines are tied to the GPU model and the TensorRT version that built them, so this
runs on the serving GPU (the ``engine`` service of compose.yaml uses the TensorRT of
the Triton image). Two optimization profiles cover the two shapes of the one graph,
each keeping ``past + sequence == total`` (the attention mask's length) in range:

    profile 0, prefill : sequence 1..C,    past 0,          mask 1..C
    profile 1, decode  : sequence 1..E,    past 1..C-E,     mask 2..C   (E: extend length)

Not run in this project's CI: it needs an NVIDIA GPU and the ``tensorrt`` package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.core.layout import (
    TENSORRT_PROFILES,
    TENSORRT_REPORT,
    ExportReport,
    LayoutError,
    read_export_report,
)
from tritonkit.errors import ExportError, UsageError, VerificationError
from tritonkit.fsutil import check_output_dir, staged_output

from .verify import CHECK_POINTS, CheckPoint, _mask_and_positions

PRECISIONS = ("fp32", "fp16", "bf16")
MAX_TENSORRT_OPSET = 20  # TensorRT 10's ONNX parser
# The dtype whose tolerance judges an engine built at each precision: an fp16 engine of a
# float32 export computes in float16, so float32's 1e-3 would fail it for rounding alone.
PRECISION_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
# (atol, rtol) of the engine against onnxruntime running the same graph: pass when
# |engine - onnxruntime| <= atol + rtol * |onnxruntime| everywhere.
ENGINE_TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-3, 1e-3),
    "float16": (2e-2, 2e-2),
    "bfloat16": (1e-1, 5e-2),
}


@dataclass
class EngineCheck:
    """One check point of the engine against onnxruntime; ``outputs``: max abs diffs."""

    name: str
    passed: bool
    finite: bool
    worst_output: str
    max_abs_diff: float
    atol: float
    rtol: float
    outputs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EXTEND = 64  # longest multi-token step after a prefill (speculative/extend requests)


def require_tensorrt() -> Any:
    """Import tensorrt on a machine with a CUDA GPU.

    Raises:
        ExportError: no CUDA GPU is visible, or the tensorrt package is missing.
    """
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        raise ExportError(
            "TensorRT engines are built on the GPU that serves them and no CUDA GPU is visible "
            "here; run this on the GPU VM (compose profile `engine`) or serve the ONNX export"
        )
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError(
            "the tensorrt Python package is not installed; `pip install tensorrt` matching the "
            "TensorRT of your Triton image, or use the compose `engine` service"
        ) from None
    return trt


def _profiles(trt: Any, builder: Any, report: ExportReport, batch: int, ctx: int) -> list[Any]:
    kv, hd = report.dims.num_kv_heads, report.dims.head_dim
    shapes = {
        # name: (min, opt, max) for prefill, then for decode
        "input_ids": [((1, 1), (1, 128), (batch, ctx)), ((1, 1), (batch, 1), (batch, EXTEND))],
        "attention_mask": [((1, 1), (1, 128), (batch, ctx)), ((1, 2), (batch, 256), (batch, ctx))],
    }
    shapes["position_ids"] = shapes["input_ids"]
    past = [
        ((1, kv, 0, hd), (1, kv, 0, hd), (batch, kv, 0, hd)),
        ((1, kv, 1, hd), (batch, kv, 255, hd), (batch, kv, ctx - EXTEND, hd)),
    ]
    profiles = []
    for which in range(len(TENSORRT_PROFILES)):
        profile = builder.create_optimization_profile()
        for entry in report.inputs:
            name = entry.name
            ranges = past[which] if name.startswith("past_key_values.") else shapes[name][which]
            profile.set_shape(name, *ranges)
        profiles.append(profile)
    return profiles


def bindable(tensor: Any, keep: list[Any]) -> Any:
    """A tensor whose address TensorRT may bind: a zero-element tensor (the past at a
    prefill, shape (B, kv, 0, hd)) has a null data pointer, which ``set_tensor_address``
    refuses, so it is bound to a one-element buffer of its own (kept alive in ``keep``)."""
    if tensor.numel():
        return tensor
    stand_in = tensor.new_zeros(1)
    keep.append(stand_in)
    return stand_in


class EngineRunner:
    """Runs a serialized engine with torch CUDA buffers, picking the profile by shape."""

    def __init__(self, trt: Any, plan: bytes, output_names: list[str]) -> None:
        import torch

        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.outputs = output_names
        self.stream = torch.cuda.Stream()

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        prefill = feed["past_key_values.0.key"].shape[2] == 0
        self.context.set_optimization_profile_async(0 if prefill else 1, self.stream.cuda_stream)
        keep = []
        for name, array in feed.items():
            t = torch.from_numpy(np.ascontiguousarray(array)).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, bindable(t, keep).data_ptr())
        dtype = next(t.dtype for t in keep if t.is_floating_point())  # the KV dtype
        results = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=dtype, device="cuda")
            results.append(out)
            self.context.set_tensor_address(name, bindable(out, keep).data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [r.float().cpu().numpy() for r in results]


def engine_tolerance(export_dtype: str, precision: str) -> tuple[float, float]:
    """(atol, rtol) for an engine built at ``precision`` from an ``export_dtype`` graph:
    the looser of the two, since the engine computes in whichever is coarser."""
    candidates = [ENGINE_TOLERANCES[export_dtype]]
    if precision in PRECISION_DTYPES:
        candidates.append(ENGINE_TOLERANCES[PRECISION_DTYPES[precision]])
    return max(candidates)


def _compare(
    point: CheckPoint,
    engine: EngineRunner,
    session: Any,
    report: ExportReport,
    dtype: str,
    precision: str,
) -> EngineCheck:
    """One check point: the engine against onnxruntime on the same inputs."""
    rng = np.random.default_rng(CHECK_POINTS.index(point))
    b, p, s = point.batch, point.past, point.seq
    vocab, layers = report.dims.vocab_size, report.dims.num_layers
    kv, hd = report.dims.num_kv_heads, report.dims.head_dim
    np_dtype = np.float16 if dtype == "float16" else np.float32
    ids = rng.integers(0, vocab, (b, p + s))  # (B, P+S)
    mask_t, pos_t = _mask_and_positions(b, p + s, point.left_padded)
    mask, pos = mask_t.numpy(), pos_t.numpy()
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}  # position_ids only where the graph has it
    empty = np.zeros((b, kv, 0, hd), np_dtype)
    past = [empty] * (2 * layers)
    if p:
        feed = {"input_ids": ids[:, :p], "attention_mask": mask[:, :p], "position_ids": pos[:, :p]}
        feed |= {f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}": past[i]
                 for i in range(2 * layers)}  # fmt: skip
        past = session.run(names, {k: v for k, v in feed.items() if k in wanted})[1:]
    feed = {"input_ids": ids[:, p:], "attention_mask": mask, "position_ids": pos[:, p:]}
    feed |= {f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}": past[i]
             for i in range(2 * layers)}  # fmt: skip
    feed = {k: v for k, v in feed.items() if k in wanted}
    expected = [x.astype(np.float32) for x in session.run(names, feed)]
    actual = engine.run(feed)
    atol, rtol = engine_tolerance(dtype, precision)
    diffs, ok, finite = {}, True, True
    for name, ref, got in zip(names, expected, actual):
        err = np.abs(got - ref)
        diffs[name] = float(err.max()) if err.size else 0.0
        finite &= bool(np.isfinite(got).all())
        ok &= bool((err <= atol + rtol * np.abs(ref)).all())
    worst = max(diffs, key=lambda k: diffs[k])
    return EngineCheck(point.name, ok and finite, finite, worst, diffs[worst], atol, rtol, diffs)


def build_engine(
    export_dir: str | Path,
    output: str | Path,
    precision: str = "fp16",
    max_batch: int = 8,
    max_context: int | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build ``OUTPUT/model.plan`` from an ONNX export and verify it; returns the report.

    Raises:
        UsageError: bad arguments or output folder.
        ExportError: no GPU or no tensorrt here, or the build failed.
        VerificationError: the engine does not match onnxruntime (report still written).
    """
    say = progress or (lambda _m: None)
    export_dir = Path(export_dir).expanduser().resolve()
    output = Path(output).expanduser().resolve()
    report = _checked_export(export_dir, precision)
    check_output_dir(output, force)
    trt = require_tensorrt()
    ctx = min(max_context or report.dims.max_positions, report.dims.max_positions)

    plan, build_s = _build_plan(
        trt, export_dir / report.model_file, report, precision, max_batch, ctx, say
    )
    checks = _verify_engine(trt, plan, export_dir / report.model_file, report, precision, say)
    passed = all(c.passed for c in checks)
    trt_report = {
        "passed": passed,
        "engine": "model.plan",
        "precision": precision,
        "max_batch": max_batch,
        "max_context": ctx,
        "profiles": list(TENSORRT_PROFILES),  # in the engine's order: prefill, decode
        "tensorrt": trt.__version__,
        "build_s": round(build_s, 1),
        "reference": "onnxruntime (same graph)",
        "checks": [c.to_dict() for c in checks],
        "source_export": str(export_dir),
    }
    with staged_output(output, ExportError) as staging:
        (staging / "model.plan").write_bytes(plan)
        (staging / TENSORRT_REPORT).write_text(json.dumps(trt_report, indent=2) + "\n")
    if not passed:
        failed = ", ".join(c.name for c in checks if not c.passed)
        raise VerificationError(f"engine verification failed: {failed} (see tensorrt.json)")
    return trt_report


def _checked_export(export_dir: Path, precision: str) -> ExportReport:
    """The export's report, once ``precision`` is one TensorRT builds.

    Raises:
        UsageError: an unknown precision, or ``export_dir`` is not an ONNX export.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}")
    try:
        report = read_export_report(export_dir)
    except LayoutError as exc:
        raise UsageError(f"{exc}; run `tritonkit export onnx` first") from exc
    refusal = tensorrt_refusal(report)
    if refusal:
        raise UsageError(refusal)
    return report


def tensorrt_refusal(report: ExportReport) -> str | None:
    """Why TensorRT cannot build this export (None when it can): TensorRT 10's ONNX
    parser reads ai.onnx opsets up to 20 and no com.microsoft operators, while the fused
    graph is opset 22 with GroupQueryAttention, and quantized graphs use MatMulNBits."""
    if report.fused or report.quantize:
        what = f"{report.quantize} " if report.quantize else ""
        return (
            f"TensorRT cannot build the {what}fused graph (opset 22 with onnxruntime's "
            "GroupQueryAttention; TensorRT parses opsets up to 20 and no com.microsoft "
            "operators): export again with --graph concat for TensorRT"
        )
    opset = report.raw.get("opset")
    if isinstance(opset, int) and opset > MAX_TENSORRT_OPSET:
        return (
            f"TensorRT parses ONNX opsets up to {MAX_TENSORRT_OPSET}, and this export is "
            f"opset {opset}: export again with --opset {MAX_TENSORRT_OPSET} or lower"
        )
    return None


def _build_plan(
    trt: Any,
    graph: Path,
    report: ExportReport,
    precision: str,
    max_batch: int,
    ctx: int,
    say: Callable[[str], None],
) -> tuple[bytes, float]:
    """Parse the ONNX ``graph`` and build the serialized engine with its two profiles;
    returns it and the seconds the build itself took.

    Raises:
        ExportError: TensorRT cannot parse the graph or build the engine.
    """
    say("parsing the ONNX graph")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    for profile in _profiles(trt, builder, report, max_batch, ctx):
        config.add_optimization_profile(profile)
    say(f"building the engine ({precision}, batch <= {max_batch}, context <= {ctx})")
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT could not build the engine; see its log above")
    build_s = time.perf_counter() - t0
    return bytes(plan), build_s


def _verify_engine(
    trt: Any,
    plan: bytes,
    graph: Path,
    report: ExportReport,
    precision: str,
    say: Callable[[str], None],
) -> list[EngineCheck]:
    """Run every check point on the engine and on onnxruntime with the same ``graph``;
    never raises on a miss, it reports it.

    Raises:
        nothing of its own: TensorRT's, CUDA's and onnxruntime's errors pass through.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph))
    runner = EngineRunner(trt, plan, [o.name for o in session.get_outputs()])
    checks = []
    for point in CHECK_POINTS:
        say(f"verifying: {point.name}")
        checks.append(_compare(point, runner, session, report, report.dtype, precision))
    return checks
