"""Profiling a served model with Triton's own tools: genai-perf and perf_analyzer.

    run_bench(url, model, ...)       both tools, unmodified, at several concurrencies;
                                     figures from their per-request export, the server's
                                     token counts, and Triton's metrics before and after
    write_inputs(...)                perf_analyzer --input-data files: prompts of an exact
                                     token length; decoder prefill / decode steps with KV cache

``tritonkit perf`` and ``tritonkit perf inputs`` are the command-line faces of these.
"""

from tritonkit.errors import BenchError, ToolFailed, ToolNotFound

from .inputs import InputFiles, ModelFiles, locate, make_prompts, write_inputs
from .profile import ProfileFigures, Stat
from .report import BenchReport, LevelResult
from .run import run_bench
from .server_metrics import ServerFigures

__all__ = [
    "BenchError",
    "BenchReport",
    "InputFiles",
    "LevelResult",
    "ModelFiles",
    "ProfileFigures",
    "ServerFigures",
    "Stat",
    "ToolFailed",
    "ToolNotFound",
    "locate",
    "make_prompts",
    "run_bench",
    "write_inputs",
]
