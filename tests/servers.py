"""Real tritonservers for tests: the toy LLM repository, and broken repositories."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tritonkit.core.interface import (
    ERROR_ENGINE_FAILED,
    ERROR_SERVER_BUSY,
    coded_error,
)
from tritonkit.model_repository import config as cfg
from tritonkit.serve import TritonServer

# The toy model's source: a decoupled python-backend "llm" that echoes the prompt's
# words back (see toy_llm/llm/1/model.py). Its config is generated, never written by hand.
TOY_SOURCE = Path(__file__).parent / "toy_llm"
TOY_PIECE_DELAY_S = "0.002"  # the toy's pause between pieces (config parameter)


def toy_config() -> Any:
    """The toy model's config: the real entry model's (inputs and outputs from
    ``core/interface.py``), with only the toy's own parameter."""
    config = cfg.entry_config("llm", "none", "cpu", max_batch_size=16, max_context=256)
    config.ClearField("parameters")
    config.parameters["piece_delay_s"].string_value = TOY_PIECE_DELAY_S
    return config


def _toy_repository() -> Path:
    """A repository with the toy model and its generated config (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="tritonkit-toy-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    shutil.copytree(
        TOY_SOURCE, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    cfg.write(toy_config(), folder / "llm")
    return folder


TOY_REPOSITORY = _toy_repository()

# Quick stops: the toy model has nothing in flight worth waiting for.
FAST = {"exit_timeout_s": 2, "startup_timeout_s": 60.0}


def toy_server(repository: str | Path = TOY_REPOSITORY, **kwargs: Any) -> TritonServer:
    """A (not yet started) server on free loopback ports; use it as a context manager."""
    options: dict[str, Any] = {"http_port": 0, "grpc_port": 0, "metrics_port": 0, **FAST}
    return TritonServer(repository, **{**options, **kwargs})


BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file model.onnx is missing")
"""

BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def broken_repository(folder: Path) -> Path:
    """The toy repository plus a model "broken" whose ``initialize`` raises."""
    shutil.copytree(TOY_REPOSITORY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "broken" / "1").mkdir(parents=True)
    (folder / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    (folder / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    return folder


def wait_until(check: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll ``check()`` until it is true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# Decoupled models that break the stream contract (for the clients' end-of-stream checks),
# as name: (pieces sent first, what happens then). "stall" never sends its final
# response; "fails_midway" sends an error response; the "cancelled" ones end with an
# empty final response, which is how the real entry model ends a request the server
# cancelled (shutdown, unload, a client gone): over HTTP the stream just closes.
ENGINE_FAILED = coded_error(ERROR_ENGINE_FAILED, "the model cannot generate: toy; reload it")
SERVER_BUSY = coded_error(ERROR_SERVER_BUSY, "256 requests are already waiting; retry shortly")
MISBEHAVING_MODELS = {
    "stall": (1, ""),
    "fails_midway": (
        1,
        """
            error = pb_utils.TritonError("toy llm: out of memory after 1 piece")
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)""",
    ),
    "cancelled_midway": (
        1,
        """
            sender.send(flags=FINAL)""",
    ),
    "cancelled_at_once": (
        0,
        """
            sender.send(flags=FINAL)""",
    ),
    # What the entry model sends once its scheduler gave up, and when its queue is full.
    "engine_failed": (
        0,
        f"""
            error = pb_utils.TritonError({ENGINE_FAILED!r})
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)""",
    ),
    "server_busy": (
        0,
        f"""
            error = pb_utils.TritonError({SERVER_BUSY!r})
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)""",
    ),
}
MISBEHAVING_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for _ in range({pieces}):  # a piece as the entry model sends it: no finish yet
                piece = pb_utils.Tensor("text_output", np.array([b" one"], dtype=np.object_))
                finish = pb_utils.Tensor("finish_reason", np.array([b""], dtype=np.object_))
                response = pb_utils.InferenceResponse(output_tensors=[piece, finish])
                sender.send(response, flags=0){then}
        return None
"""


def misbehaving_repository(folder: Path) -> Path:
    """The toy repository plus the ``MISBEHAVING_MODELS``, with the toy llm's interface."""
    shutil.copytree(TOY_REPOSITORY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    config = (TOY_REPOSITORY / "llm" / "config.pbtxt").read_text()
    for name, (pieces, then) in MISBEHAVING_MODELS.items():
        (folder / name / "1").mkdir(parents=True)
        renamed = config.replace('name: "llm"', f'name: "{name}"')
        (folder / name / "config.pbtxt").write_text(renamed)
        (folder / name / "1" / "model.py").write_text(
            MISBEHAVING_MODEL.format(pieces=pieces, then=then)
        )
    return folder
