"""``build_repository``: a verified model folder -> a Triton model repository, written
by the builder of the chosen engine (``spec.py``, ``builders/``).

Whatever the engine, the repository has the entry model ``NAME`` (decoupled python
backend, serving ``tritonkit.core.interface``) and its unary twin ``NAME_sync``, which
HTTP /infer and gRPC ModelInfer need because Triton refuses unary calls on decoupled
models. tritonkit's engine adds ``NAME_decoder``, the graph it runs in-process served
once more to perf_analyzer and direct callers (its weights stored once).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .spec import BuiltRepository, EngineSpec, OnnxRuntime, RepositorySpec


def build_repository(
    source: str | Path,
    output: str | Path,
    engine: EngineSpec | None = None,
    spec: RepositorySpec | None = None,
    *,
    force: bool = False,
) -> BuiltRepository:
    """Assemble a repository at ``output`` from ``source`` (what ``engine.source`` says:
    an `export onnx` folder for ``OnnxRuntime`` and ``TensorRTPlan``, the default; an
    `export hf` folder for ``Vllm``), with ``spec``'s settings (default
    ``RepositorySpec()``). The repository is written beside ``output`` and renamed into
    place, so a failed build leaves ``output`` as it was.

    Raises:
        UsageError: bad settings, options the target cannot take, a non-empty ``output``
            without ``force``, or (gpu) a context or batch that does not fit the GPU.
        RepositoryError: the source is missing, incomplete or unverified, or (gpu) holds a
            graph the GPU image cannot serve.
    """
    engine = engine if engine is not None else OnnxRuntime()
    spec = spec if spec is not None else RepositorySpec()
    spec.check()
    engine.check(spec)
    builder = importlib.import_module(engine.builder)
    built: BuiltRepository = builder.build(
        Path(source).expanduser().resolve(),
        Path(output).expanduser().resolve(),
        spec,
        engine,
        force,
    )
    return built
