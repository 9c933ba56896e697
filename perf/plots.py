"""PNG plots of a perf run (matplotlib, Agg backend: no display needed).

output_tokens_per_s.png   output tokens/s (all requests together) against concurrency
time_to_first_token.png   time to first token, p50 and p99, against concurrency
token_latency.png         median latency of each output token against its position
summary.png               the three side by side (the picture for a README)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .profile import ProfileFigures

Levels = Sequence[tuple[int, ProfileFigures]]  # (concurrency, figures), in run order


def _throughput(ax: Any, levels: Levels) -> None:
    xs = [c for c, _ in levels]
    ax.plot(xs, [f.output_tokens_per_s for _, f in levels], "o-", label="all requests")
    ax.plot(
        xs,
        [f.output_tokens_per_s_per_request.p50 for _, f in levels],
        "s--",
        label="per request (p50)",
    )
    ax.set(title="Output tokens/s", xlabel="concurrency", ylabel="tokens/s")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)


def _ttft(ax: Any, levels: Levels) -> None:
    xs = [c for c, _ in levels]
    ax.plot(xs, [f.time_to_first_token_ms.p50 for _, f in levels], "o-", label="p50")
    ax.plot(xs, [f.time_to_first_token_ms.p99 for _, f in levels], "^--", label="p99")
    ax.set(title="Time to first token", xlabel="concurrency", ylabel="ms")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)


def _positions(ax: Any, levels: Levels) -> None:
    for c, f in levels:
        # Token 1 is the time to first token (prefill): the plot starts at token 2.
        ys = f.position_latency_ms[1:]
        ax.plot(range(2, len(ys) + 2), ys, label=f"concurrency {c}")
    ax.set(title="Token latency by position (median)", xlabel="output token position", ylabel="ms")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)


PLOTS: dict[str, Callable[[Any, Levels], None]] = {
    "output_tokens_per_s.png": _throughput,
    "time_to_first_token.png": _ttft,
    "token_latency.png": _positions,
}


def write_plots(levels: Levels, output: str | Path, title: str = "") -> list[Path]:
    """Write the PNGs into ``output``; returns their paths (summary.png last)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        draw(ax, levels)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), dpi=100)
    for ax, draw in zip(axes, PLOTS.values()):
        draw(ax, levels)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "summary.png")
    plt.close(fig)
    paths.append(out / "summary.png")
    return paths
