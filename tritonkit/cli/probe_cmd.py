"""``tritonkit probe``: a readiness check that also sees an engine that gave up.

Triton's ``/v2/health/ready`` stays 200 when the entry model's scheduler has given up
(the python backend cannot mark its own model unready), so a replica whose every request
fails would keep its traffic. This probe asks Triton's readiness and then its metrics
port for ``tritonkit_engine_broken``: either failing is not ready. The KServe
ServingRuntime and compose's healthcheck run it inside the Triton container (standard
library only: it starts in well under a second).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any

from tritonkit.model_repository.runtime.metrics import ENGINE_BROKEN_METRIC

HELP = """\
Exit 0 when Triton at --url is ready (--live: live) and no entry model reports its
engine broken (tritonkit_engine_broken on the metrics port); else exit 1 with one line
saying why. For readiness and liveness probes: Triton's own /v2/health endpoints do not
see an engine that gave up, and a restart (liveness) is what brings it back.

examples:
  tritonkit probe                                   # Triton on this host's default ports
  tritonkit probe --url http://127.0.0.1:8000 --metrics-url http://127.0.0.1:8002/metrics
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="readiness check that sees a broken engine (for probes)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP endpoint")
    p.add_argument(
        "--metrics-url", default="http://127.0.0.1:8002/metrics", help="Triton's metrics"
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    p.add_argument(
        "--live",
        action="store_true",
        help="liveness instead: Triton answers (/v2/health/live) and no engine gave up; a "
        "model still loading is live (a restart would not help it)",
    )
    p.set_defaults(handler=_probe)


def broken_models(metrics_text: str) -> list[str]:
    """The ``model="..."`` labels whose ``tritonkit_engine_broken`` sample is not 0."""
    broken = []
    for line in metrics_text.splitlines():
        if not line.startswith(ENGINE_BROKEN_METRIC + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        try:
            if float(value) == 0:
                continue
        except ValueError:
            pass  # an unreadable sample counts as broken
        model = labels.split('model="', 1)[1].split('"', 1)[0] if 'model="' in labels else "?"
        broken.append(model)
    return broken


def _probe(args: argparse.Namespace) -> int:
    try:
        health = "live" if args.live else "ready"
        with urllib.request.urlopen(f"{args.url}/v2/health/{health}", timeout=args.timeout):
            pass
        with urllib.request.urlopen(args.metrics_url, timeout=args.timeout) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        what = "not live" if args.live else "not ready"
        print(f"{what}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    broken = broken_models(text)
    if broken:
        what = "not live" if args.live else "not ready"
        print(f"{what}: engine broken in {', '.join(sorted(set(broken)))}", file=sys.stderr)
        return 1
    return 0
