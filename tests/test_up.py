"""``tritonkit up``: one command from a model to an OpenAI-compatible API, stopped cleanly.

Run as a user would, in a subprocess on tiny-llama (seconds to export): the banner's URL
answers a chat completion with the openai SDK, and SIGTERM stops the gateway and Triton
with exit code 0, leaving nothing listening.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest


def test_up_serves_an_api_and_stops_cleanly(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tritonkit", "up", "tiny-llama", "--port", "0",
           "--workdir", str(tmp_path / "up")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    url = None
    try:
        deadline = time.monotonic() + 300
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"OpenAI API\s+(http://\S+)/v1", line)
            url = found.group(1) if found else None
        assert url, "".join(lines[-30:])
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
        reply = client.chat.completions.create(
            model="llm", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        assert reply.usage.completion_tokens == 5 and reply.choices[0].message.content
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_up_refuses_an_open_address_without_keys(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tritonkit", "up", "tiny-llama", "--host", "0.0.0.0",
           "--workdir", str(tmp_path / "up")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--api-key-file" in proc.stderr and not (tmp_path / "up").exists()
