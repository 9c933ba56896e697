"""Triton ``config.pbtxt`` files, built and parsed through the ModelConfig protobuf.

Never string templates: every config is a ``model_config_pb2.ModelConfig`` written
with ``text_format``, and ``parse`` reads one back with the same schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.core import interface
from tritonkit.core.layout import CONFIG_FILE, TENSORRT_PROFILES, ReportTensor
from tritonkit.errors import RepositoryError


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, Triton data type and dims (-1 for a dynamic dim)."""

    name: str
    data_type: int  # a model_config_pb2.DataType value, e.g. mc.TYPE_STRING
    dims: tuple[int, ...]
    optional: bool = False


def entry_inputs() -> list[TensorSpec]:
    """The entry model's inputs, as ``core/interface.py`` declares them."""
    return [_spec(t) for t in interface.ENTRY_INPUTS]


def entry_outputs() -> list[TensorSpec]:
    """The entry model's outputs, as ``core/interface.py`` declares them."""
    return [_spec(t) for t in interface.ENTRY_OUTPUTS]


def _spec(t: interface.EntryTensor) -> TensorSpec:
    name = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
    return TensorSpec(t.name, mc.DataType.Value(name), t.dims, t.optional)


_ONNX_TO_TRITON = {
    "FLOAT": mc.TYPE_FP32,
    "FLOAT16": mc.TYPE_FP16,
    "BFLOAT16": mc.TYPE_BF16,
    "INT64": mc.TYPE_INT64,
    "INT32": mc.TYPE_INT32,
}


def tensor_from_report(entry: ReportTensor) -> TensorSpec:
    """A ``TensorSpec`` from an ``export.json`` input/output entry (named dims become -1).

    Raises:
        RepositoryError: the ONNX data type has no Triton equivalent here.
    """
    try:
        data_type = _ONNX_TO_TRITON[entry.dtype]
    except KeyError:
        raise RepositoryError(f"unsupported ONNX type {entry.dtype} for {entry.name}") from None
    dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in entry.shape)
    return TensorSpec(entry.name, data_type, dims)


def _inputs(specs: Iterable[TensorSpec]) -> list[Any]:
    return [
        mc.ModelInput(name=s.name, data_type=s.data_type, dims=list(s.dims), optional=s.optional)
        for s in specs
    ]


def _outputs(specs: Iterable[TensorSpec]) -> list[Any]:
    return [mc.ModelOutput(name=s.name, data_type=s.data_type, dims=list(s.dims)) for s in specs]


def _params(values: dict[str, str]) -> dict[str, Any]:
    return {k: mc.ModelParameter(string_value=str(v)) for k, v in values.items()}


def _kind(target: str) -> Any:
    return mc.ModelInstanceGroup.KIND_GPU if target == "gpu" else mc.ModelInstanceGroup.KIND_CPU


def entry_config(
    name: str,
    decoder_model: str,
    target: str,
    max_batch_size: int,
    max_context: int,
    versions: Iterable[int] = (),
    execution_provider: str = "cuda",
    chat_template: str | None = None,
    prefill_chunk: int = 128,
    max_waiting: int = 256,
    prefix_cache: bool = True,
    stall_factor: float = 4.5,
) -> Any:
    """The decoupled python-backend entry model's config.

    ``execution_provider`` (gpu target): ``cuda``, or ``tensorrt`` for onnxruntime's
    TensorRT execution provider inside the entry model. ``chat_template``: the model's
    template as ``ChatTemplate.to_config()`` writes it, so clients can read it from the
    server (the entry model itself never renders it).
    """
    values = {
        "decoder_model": decoder_model,  # each version names its graph in decoder.json
        "max_batch_size": str(max_batch_size),  # sequences per decode step
        "max_context": str(max_context),
        "execution_provider": execution_provider if target == "gpu" else "cpu",
        "intra_op_threads": "auto",  # auto: 1 for small graphs, else onnxruntime's
        "prefill_chunk": str(prefill_chunk),  # prompt tokens per loop iteration
        "max_waiting": str(max_waiting),  # requests waiting for a row; more: server_busy
        "prefix_cache": "true" if prefix_cache else "false",  # finished rows keep prefixes
        "stall_factor": f"{stall_factor:g}",  # a stream's gap while a prompt is read, in steps
    }
    return _entry_model(name, target, values, versions, chat_template)


def _entry_model(
    name: str,
    target: str,
    values: dict[str, str],
    versions: Iterable[int],
    chat_template: str | None,
) -> Any:
    """A decoupled python-backend model with the request interface and ``values`` as its
    parameters: what both engines' entry models share."""
    if chat_template is not None:
        values["chat_template"] = chat_template
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,  # requests carry their own shapes; batching is in-flight, inside
        input=_inputs(entry_inputs()),
        output=_outputs(entry_outputs()),
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=_kind(target))],
        parameters=_params(values),
    )
    set_versions(config, versions)
    return config


def vllm_entry_config(
    name: str,
    target: str,
    max_batch_size: int,
    max_context: int,
    versions: Iterable[int] = (),
    chat_template: str | None = None,
    prefix_cache: bool = True,
    dtype: str = "auto",
    cpu_kv_cache_gib: float = 1.0,
    gpu_memory_utilization: float = 0.9,
) -> Any:
    """The entry model's config when vLLM is its engine: the same inputs, outputs and
    transaction policy as ``entry_config``, with vLLM's settings as parameters."""
    values = {
        "engine": "vllm",
        "max_batch_size": str(max_batch_size),  # vLLM's max_num_seqs
        "max_context": str(max_context),  # vLLM's max_model_len
        "prefix_cache": "true" if prefix_cache else "false",  # enable_prefix_caching
        "dtype": dtype,
        "cpu_kv_cache_gib": f"{cpu_kv_cache_gib:g}",  # VLLM_CPU_KVCACHE_SPACE (cpu target)
        "gpu_memory_utilization": f"{gpu_memory_utilization:g}",
        "enforce_eager": "true" if target == "cpu" else "false",  # CUDA graphs on a GPU
    }
    return _entry_model(name, target, values, versions, chat_template)


def sync_config(name: str, entry_model: str, instances: int, target: str) -> Any:
    """The non-decoupled twin of the entry model, for unary HTTP /infer and gRPC ModelInfer."""
    return mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,
        input=_inputs(entry_inputs()),
        output=_outputs(entry_outputs()),
        instance_group=[
            mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        ],
        parameters=_params({"entry_model": entry_model}),
    )


def decoder_config(
    name: str,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec],
    target: str,
    tensorrt_accelerator: bool = False,
    versions: Iterable[int] = (),
    backend: str = "onnxruntime",
) -> Any:
    """The standalone decoder: python backend on CPU; on a GPU Triton's native
    ``onnxruntime_onnx`` (optionally with the TensorRT accelerator) or, with
    ``backend="tensorrt"``, a prebuilt engine as ``tensorrt_plan``."""
    config = mc.ModelConfig(
        name=name,
        max_batch_size=0,  # the batch is the graph's own dynamic first dim
        input=_inputs(inputs),
        output=_outputs(outputs),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=_kind(target))],
    )
    if target == "gpu" and backend == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        # Without a profile list Triton uses the engine's first profile only (prefill) and
        # refuses every decode step's shapes; with both it picks the one that fits.
        config.instance_group[0].profile.extend(str(i) for i in range(len(TENSORRT_PROFILES)))
    elif target == "gpu":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
        if tensorrt_accelerator:
            accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accel.name = "tensorrt"
            accel.parameters["precision_mode"] = "FP16"
    else:
        config.backend = "python"
    set_versions(config, versions)
    return config


def set_versions(config: Any, versions: Iterable[int]) -> None:
    """Serve exactly ``versions`` (``specific`` policy); empty leaves Triton's default."""
    versions = sorted(set(versions))
    if versions:
        config.version_policy.CopyFrom(
            mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=versions))
        )


def to_text(config: Any) -> str:
    """The config as ``config.pbtxt`` text."""
    return str(text_format.MessageToString(config))


def write(config: Any, model_dir: Path) -> Path:
    """Write ``model_dir/config.pbtxt``."""
    path = model_dir / CONFIG_FILE
    path.write_text(to_text(config))
    return path


def parse(text: str, source: str = CONFIG_FILE) -> Any:
    """Parse ``config.pbtxt`` text with the ModelConfig schema.

    Raises:
        RepositoryError: the text is not a valid ModelConfig.
    """
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source}: not a valid Triton model config: {exc}") from exc


def read(model_dir: Path) -> Any:
    """Parse ``model_dir/config.pbtxt``.

    Raises:
        RepositoryError: the file is missing or invalid.
    """
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise RepositoryError(f"{path} is missing")
    return parse(path.read_text(), str(path))


def engine_of(config: Any) -> str:
    """The engine a model's config names (its ``engine`` parameter: ``vllm``); a model
    without one is tritonkit's onnxruntime engine or a plain model: ``onnxruntime``."""
    engine = config.parameters.get("engine")
    return str(engine.string_value) if engine is not None else "onnxruntime"
