"""A perf run's results: one ``LevelResult`` per concurrency, written as JSON, CSV and a table."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonkit.table import render

from .profile import ProfileFigures, Stat
from .server_metrics import ServerFigures


@dataclass
class LevelResult:
    """Everything measured at one concurrency."""

    concurrency: int
    client: ProfileFigures  # from the profile export, with the server's token counts
    server: ServerFigures | None  # from the metrics port; None when it could not be read
    retokenized_output_tokens: Stat | None = None  # as genai-perf counts: the text encoded again
    tool_reported: dict[str, Any] | None = None  # genai-perf's own summary, as it wrote it
    raw_dir: Path | None = None  # the tool's own files and log

    @property
    def exact_output(self) -> bool:
        """Every request generated the same number of tokens (by the server's count)."""
        return self.client.output_tokens.min == self.client.output_tokens.max

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "client": self.client.to_dict(),
            "server": self.server.to_dict() if self.server else None,
            "retokenized_output_tokens": (
                vars(self.retokenized_output_tokens) if self.retokenized_output_tokens else None
            ),
            "tool_reported": self.tool_reported,
            "raw_dir": str(self.raw_dir) if self.raw_dir else None,
        }


@dataclass
class BenchReport:
    """A whole run: its settings, one result per concurrency, and the files written."""

    settings: dict[str, Any]
    levels: list[LevelResult]
    files: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per concurrency (the CSV's columns)."""
        rows = []
        for level in self.levels:
            c, s = level.client, level.server
            row: dict[str, Any] = {"concurrency": level.concurrency, "requests": c.requests}
            for key, stat in (
                ("ttft_ms", c.time_to_first_token_ms),
                ("itl_ms", c.inter_token_latency_ms),
                ("request_latency_ms", c.request_latency_ms),
                ("output_tokens_per_s_per_request", c.output_tokens_per_s_per_request),
            ):
                row[f"{key}_p50"], row[f"{key}_p99"] = stat.p50, stat.p99
            row["output_tokens_per_s"] = c.output_tokens_per_s
            row["requests_per_s"] = c.requests_per_s
            row["output_tokens_p50"] = c.output_tokens.p50
            row["output_tokens_min"], row["output_tokens_max"] = (
                c.output_tokens.min,
                c.output_tokens.max,
            )
            row["input_tokens_p50"] = c.input_tokens.p50
            retok = level.retokenized_output_tokens
            row["retokenized_output_tokens_mean"] = retok.mean if retok else None
            for key in (
                "queue_ms",
                "compute_ms",
                "server_ttft_ms",
                "server_itl_ms",
                "mean_decode_batch",
            ):
                row[key] = getattr(s, key) if s else None
            rows.append(row)
        return rows

    def write(self, output: str | Path) -> dict[str, Path]:
        """Write ``results.json`` (everything) and ``results.csv`` (the rows) into ``output``."""
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out / "results.json", out / "results.csv"
        doc = {
            "settings": self.settings,
            "levels": [level.to_dict() for level in self.levels],
            "rows": self.rows(),
        }
        json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        rows = self.rows()
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        self.files.update({"json": json_path, "csv": csv_path})
        return {"json": json_path, "csv": csv_path}

    def table(self) -> str:
        """A plain-text table (valid Markdown): p50 / p99 where the figure is per request."""
        headers = [
            "concurrency",
            "TTFT ms",
            "ITL ms",
            "latency ms",
            "out tok/s",
            "tok/s per req",
            "req/s",
            "queue ms",
            "compute ms",
            "server TTFT ms",
        ]
        body = []
        for level in self.levels:
            c, s = level.client, level.server
            body.append(
                [
                    str(level.concurrency),
                    _pair(c.time_to_first_token_ms),
                    _pair(c.inter_token_latency_ms),
                    _pair(c.request_latency_ms),
                    _num(c.output_tokens_per_s),
                    _pair(c.output_tokens_per_s_per_request),
                    _num(c.requests_per_s),
                    _num(s.queue_ms) if s else "-",
                    _num(s.compute_ms) if s else "-",
                    _num(s.server_ttft_ms) if s else "-",
                ]
            )
        return render(headers, body, align="r" * len(headers), markdown=True)


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 1 else f"{x:.2g}"


def _pair(stat: Stat) -> str:
    return f"{_num(stat.p50)} / {_num(stat.p99)}"
