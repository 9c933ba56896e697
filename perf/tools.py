"""Where perf_analyzer and genai-perf live, the environment they need, and running them.

perf_analyzer is the binary of the ``tritonclient[all]==2.51.0`` wheel (in this
environment's ``bin``). It links Debian's ``libb64.so.0d`` and ``libcudart.so.12``; the
latter comes from the ``nvidia-cuda-runtime-cu12`` wheel, whose ``lib`` folder goes on
``LD_LIBRARY_PATH``. genai-perf needs numpy>=2, which this environment cannot have
(tritonclient 2.51 pins numpy<2), so it lives in a venv of its own
(``.venv-genai-perf`` beside this one, made by ``scripts/install_perf_tools.sh``) and
finds perf_analyzer on the ``PATH`` we give it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tritonkit.errors import ToolFailed, ToolNotFound

SETUP_HINT = "run `bash scripts/install_perf_tools.sh` from the tritonkit checkout"
PERF_ANALYZER_HINT = (
    "install it with `pip install 'tritonclient[all]==2.51.0' nvidia-cuda-runtime-cu12` "
    "(the tritonkit[bench] extra)"
)
GENAI_PERF_HINT = (
    "install it in its own venv (it needs numpy>=2): `python3 -m venv .venv-genai-perf && "
    ".venv-genai-perf/bin/pip install genai-perf==0.0.16 'numpy>=2'`, or " + SETUP_HINT
)
GENAI_PERF_ENV = "TRITONKIT_GENAI_PERF"  # an explicit genai-perf executable
GENAI_PERF_VENV = ".venv-genai-perf"  # next to this environment's venv


def cuda_runtime_lib() -> Path | None:
    """``site-packages/nvidia/cuda_runtime/lib`` (holds libcudart.so.12), if installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(location) / "lib"
        if lib.is_dir():
            return lib
    return None


def find_perf_analyzer(path: str | Path | None = None) -> Path:
    """The perf_analyzer executable: ``path``, else this environment's ``bin``, else ``PATH``.

    Raises:
        ToolNotFound: no perf_analyzer there.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise ToolNotFound(f"no perf_analyzer executable at {candidate}; {PERF_ANALYZER_HINT}")
    local = Path(sys.prefix) / "bin" / "perf_analyzer"
    if local.is_file():
        return local
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise ToolNotFound(f"perf_analyzer is not installed; {PERF_ANALYZER_HINT}")


def find_genai_perf(path: str | Path | None = None) -> Path:
    """genai-perf: ``path``, ``$TRITONKIT_GENAI_PERF``, ``.venv-genai-perf`` beside this
    venv, then ``PATH``.

    Raises:
        ToolNotFound: no genai-perf anywhere; the message says how to install it.
    """
    explicit = path or os.environ.get(GENAI_PERF_ENV)
    if explicit:
        candidate = Path(explicit).expanduser()
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise ToolNotFound(f"no genai-perf executable at {candidate}; {GENAI_PERF_HINT}")
    sibling = Path(sys.prefix).parent / GENAI_PERF_VENV / "bin" / "genai-perf"
    if sibling.is_file():
        return sibling
    found = shutil.which("genai-perf")
    if found:
        return Path(found)
    raise ToolNotFound(f"genai-perf is not installed; {GENAI_PERF_HINT}")


def tool_environment(perf_analyzer: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for perf_analyzer and genai-perf.

    perf_analyzer's folder goes first on ``PATH`` (genai-perf calls it by name), the CUDA
    runtime wheel's ``lib`` first on ``LD_LIBRARY_PATH``, and the hub is off: genai-perf
    must read the local tokenizer folder it is given, never download one.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join(p for p in (str(perf_analyzer.parent), env.get("PATH")) if p)
    lib = cuda_runtime_lib()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p
        )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def check_perf_analyzer(perf_analyzer: Path, env: dict[str, str]) -> str:
    """Run ``perf_analyzer --version``; returns its version line.

    Raises:
        ToolNotFound: it cannot start; for a missing shared library the message names
            the package that has it.
    """
    try:
        done = subprocess.run(
            [str(perf_analyzer), "--version"], env=env, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolNotFound(f"perf_analyzer at {perf_analyzer} cannot start: {exc}") from exc
    output = done.stdout + done.stderr
    if "libb64" in output:
        raise ToolNotFound(
            "perf_analyzer needs Debian's libb64-0d: `sudo apt-get install -y libb64-0d` "
            f"(or {SETUP_HINT})"
        )
    if "libcudart" in output:
        raise ToolNotFound(
            "perf_analyzer needs libcudart.so.12: `pip install nvidia-cuda-runtime-cu12` "
            "in this environment"
        )
    if done.returncode != 0 or "Version" not in output:
        raise ToolNotFound(f"perf_analyzer at {perf_analyzer} does not run: {_last_line(output)}")
    return output.strip().splitlines()[0]


# A line that explains a failure, in the order we prefer them.
_ERROR_LINES = (
    re.compile(r"had error: .+"),
    re.compile(r"(?i)^\s*(error|failed)\b.*"),
    re.compile(r"(?i)\berror\b.*"),
)


def tool_error_line(log: str) -> str:
    """The most telling error line of a tool's output (or its last line)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in _ERROR_LINES:
        for line in lines:
            if line.startswith(("File ", "Traceback")):
                continue
            match = pattern.search(line)
            if match:
                return match.group(0).strip()[:300]
    return _last_line(log)


def run_tool(
    cmd: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    tick: Callable[[], None] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run ``cmd`` with its output to ``log_path``, calling ``tick()`` twice a second.

    Raises:
        ToolNotFound: the executable cannot be started.
        ToolFailed: non-zero exit or past ``timeout_s`` (the process group is killed);
            the message holds the tool's own error line and the log's path.
    """
    name = Path(cmd[0]).name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: a timeout stops perf_analyzer too
            )
        except OSError as exc:
            raise ToolNotFound(f"cannot start {name}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    _kill_group(proc)
                    raise ToolFailed(
                        f"{name} ran past {timeout_s:.0f}s and was stopped; lower --requests "
                        f"or raise --timeout (log: {log_path})"
                    )
                if tick is not None:
                    tick()
                time.sleep(0.5)
        except BaseException:
            _kill_group(proc)
            raise
    if proc.returncode != 0:
        reason = tool_error_line(log_path.read_text(errors="replace"))
        raise ToolFailed(f"{name} failed (exit {proc.returncode}): {reason} (log: {log_path})")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
