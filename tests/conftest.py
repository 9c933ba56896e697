"""Shared fixtures: tiny random models built from configs with fixed seeds (no network)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Nothing in the tests may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# What a run from an empty cache writes at its peak (measured: the Docker engine's images,
# the SmolLM2 exports, servers' folders and Blob data), with room to spare.
PEAK_DISK_GB = 10


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say up front when the disk is too full for the run: otherwise the first sign is a
    "no space left on device" deep inside an image build or a ``docker load``."""
    import tempfile

    from tritonkit.export.packaged import cache_root

    low = []
    for where in (Path(tempfile.gettempdir()), cache_root()):
        folder = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
        free_gb = shutil.disk_usage(folder).free / 1e9
        if free_gb < PEAK_DISK_GB:
            low.append(f"{folder} has {free_gb:.1f} GB free")
    if not low:
        return None
    return (
        f"WARNING: {'; '.join(low)}; the suite writes about {PEAK_DISK_GB} GB at its "
        "peak: free space first (scripts/dockerd.sh's engine: docker image prune)"
    )


# Small configs per architecture: 2 layers, GQA where the architecture has it.
_DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: 2 KV heads for 4 query heads
    max_position_embeddings=256,
)
TINY_CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
    "llama": _DECODER,
    "qwen2": _DECODER,
    "mistral": {**_DECODER, "num_key_value_heads": 1, "sliding_window": None},  # MQA
}


def save_tiny_model(arch: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """Save a random ``arch`` model with the tiny-llama tokenizer to ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tritonkit.export import tiny

    tokenizer = tiny.build_tokenizer()
    kwargs = {**TINY_CONFIGS[arch], **overrides}
    config = AutoConfig.for_model(
        arch, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **kwargs
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_model_folder("gpt2")`` saves a tiny random model and returns its folder."""

    def make(arch: str, **overrides) -> Path:
        return save_tiny_model(arch, tmp_path / f"hf-{arch}", **overrides)

    return make


# ---- a real Triton serving real exports ------------------------------------------------


@dataclass
class Served:
    """A running tritonserver with the session's models, and where they came from."""

    server: Any  # tritonkit.serve.TritonServer
    repository: Path
    sources: dict[str, Path]  # entry model name -> Hugging Face folder it was exported from

    @property
    def grpc_url(self) -> str:
        return str(self.server.grpc_url)

    @property
    def http_url(self) -> str:
        return str(self.server.http_url)

    @property
    def metrics_url(self) -> str:
        return str(self.server.metrics_url)


def build_served_repository(root: Path, models: dict[str, str]) -> tuple[Path, dict[str, Path]]:
    """Export each ``name -> arch`` (``tiny-llama`` for the embedded one) into one repository."""
    from tritonkit.export import main_export, tiny
    from tritonkit.model_repository import RepositorySpec, build_repository

    repository = root / "repository"
    repository.mkdir()
    sources = {}
    for name, arch in models.items():
        if arch == tiny.NAME:
            src = tiny.save(root / "hf" / name)
        else:
            src = save_tiny_model(arch, root / "hf" / name)
        sources[name] = src
        main_export(str(src), root / "exports" / name)
        built = build_repository(
            root / "exports" / name,
            root / "repos" / name,
            spec=RepositorySpec(name=name, sync_instances=2),
        )
        for model_dir in built.path.iterdir():
            shutil.move(str(model_dir), repository / model_dir.name)
    return repository, sources


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real Triton for the session: tiny GPT-2, tiny Llama and tiny-llama (as ``llm``)."""
    from tritonkit.serve import TritonServer

    root = tmp_path_factory.mktemp("served")
    repository, sources = build_served_repository(
        root, {"gpt2": "gpt2", "llama": "llama", "llm": "tiny-llama"}
    )
    server = TritonServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_s=3,
        log_file=root / "server.log",
    )
    server.start()
    try:
        yield Served(server, repository, sources)
    finally:
        server.stop()


# ---- the real model: SmolLM2-135M-Instruct, exported once per run -----------------------


@pytest.fixture(scope="session")
def smollm2_export() -> Path:
    """The verified ONNX export of SmolLM2 (cached per machine; see real_model.py)."""
    import real_model

    return real_model.cached_export()


@pytest.fixture(scope="session")
def smollm2_int4_export() -> Path:
    """SmolLM2 exported with 4-bit weights (cached per machine like ``smollm2_export``)."""
    import real_model

    return real_model.cached_export(quantize="int4")


@pytest.fixture(scope="session")
def smollm2_reference() -> Any:
    """The transformers model SmolLM2 is checked against (``LoadedModel``)."""
    import real_model

    return real_model.reference()


@pytest.fixture(scope="session")
def smollm2_served(smollm2_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Triton serving SmolLM2 as ``smol`` (entry), ``smol_decoder`` and ``smol_sync``."""
    from tritonkit.model_repository import RepositorySpec, build_repository
    from tritonkit.serve import TritonServer

    root = tmp_path_factory.mktemp("smollm2")
    built = build_repository(
        smollm2_export, root / "repository", spec=RepositorySpec(name="smol", sync_instances=1)
    )
    server = TritonServer(
        built.path,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_s=3,
        log_file=root / "server.log",
    )
    with server:
        yield server
