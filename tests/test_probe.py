"""``tritonkit probe`` against real Tritons: the session's (healthy entry models, whose
tritonkit_engine_broken gauge is 0) and a toy one whose model reports its engine broken
the way the entry model does once its scheduler gave up (the real engine cannot be made
to give up from outside; its callback is tested in test_scheduler.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import toy_server

from tritonkit.cli.probe_cmd import broken_models
from tritonkit.model_repository.runtime.metrics import ENGINE_BROKEN_METRIC

pytestmark = pytest.mark.slow

BROKEN = f"""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="{ENGINE_BROKEN_METRIC}", description="broken",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.metric = self.family.Metric(labels={{"model": "gave_up", "version": "1"}})
        self.metric.set(1)

    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
"""

CONFIG = """
name: "gave_up"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def probe(http: str, metrics: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritonkit", "probe", "--url", f"http://{http}",
         "--metrics-url", f"http://{metrics}/metrics", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_metrics_parser_finds_broken_models() -> None:
    text = (
        f'{ENGINE_BROKEN_METRIC}{{model="llm",version="1"}} 0\n'
        f'{ENGINE_BROKEN_METRIC}{{model="other",version="2"}} 1\n'
        'nv_inference_count{model="llm"} 5\n'
    )
    assert broken_models(text) == ["other"]
    assert broken_models(text.replace(" 1\n", " 0\n")) == []


def test_probe_passes_a_healthy_triton(served: Any) -> None:
    proc = probe(served.http_url, served.metrics_url)
    assert proc.returncode == 0, proc.stderr
    assert probe(served.http_url, served.metrics_url, "--live").returncode == 0


def test_probe_fails_a_triton_whose_engine_gave_up(tmp_path: Path) -> None:
    model = tmp_path / "repository" / "gave_up"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(BROKEN)
    with toy_server(tmp_path / "repository") as triton:
        urls = triton.http_url, triton.metrics_url
        proc = probe(*urls)
        assert proc.returncode == 1
        assert proc.stderr.strip() == "not ready: engine broken in gave_up"
        live = probe(*urls, "--live")  # the liveness probe restarts it
        assert live.returncode == 1 and live.stderr.strip() == "not live: engine broken in gave_up"
    proc = probe(*urls)  # stopped: not ready either
    assert proc.returncode == 1 and proc.stderr.startswith("not ready:")
