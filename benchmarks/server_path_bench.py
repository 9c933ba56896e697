"""Where a streamed token's time goes on the server path: Triton against the bare loop.

    .venv/bin/python benchmarks/server_path_bench.py [--rounds 5] [--tokens 64]
        [--repository OTHER_REPO]

On tiny-llama (a 0.3-0.5 ms decode step, so the server's fixed per-token cost shows), in
one run, alternating round by round so the machine's noise falls on every path alike:
  * the in-process loop: the engine the server runs, a plain greedy loop (no server);
  * Triton at concurrency 1, streamed over gRPC through tritonkit's Python client;
  * with ``--repository``: the same through a second repository (an older tritonkit's
    build of the same export, for a before/after in one run).
Then the CPU each process spends per streamed token (from /proc: the server, the entry
model's stub, the client), which says where the server path's time goes. Medians of the
per-round ratios (this machine is noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _table import table
from serving_bench import engine_loop

from tritonkit.client import LLMClient
from tritonkit.core.layout import read_export_report
from tritonkit.export import main_export
from tritonkit.model_repository import build_repository
from tritonkit.model_repository.runtime.engines import open_engine
from tritonkit.serve import TritonServer

PROMPT = "What is the capital of France? Answer with a short paragraph."


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stub_pid(server_pid: int, model: str) -> int | None:
    """The python-backend stub process of ``model`` under the server ``server_pid``."""
    found = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True)
    for pid in found.stdout.split():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if f"/{model}/" in cmdline or f"{model}_0" in cmdline:
            return int(pid)
    return None


def stream_rates(client: LLMClient, n: int, requests: int) -> list[float]:
    """Tokens/s of ``requests`` streamed generations of exactly ``n`` tokens."""
    rates = []
    for _ in range(requests):
        r = client.generate(PROMPT, on_text=lambda _: None, max_tokens=n, min_tokens=n)
        rates.append(n / r.latency_s)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the paths")
    parser.add_argument("--requests", type=int, default=20, help="requests per path per round")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--repository", type=Path, help="a second repository, to compare")
    args = parser.parse_args()
    n = args.tokens

    with tempfile.TemporaryDirectory() as tmp:
        export = main_export("tiny-llama", Path(tmp) / "export").output
        repos = {"Triton, gRPC stream": build_repository(export, Path(tmp) / "repo").path}
        if args.repository:
            repos[f"Triton, gRPC stream ({args.repository.name})"] = args.repository
        report = read_export_report(export)
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(export / "tokenizer.json")).encode(PROMPT).ids
        engine = open_engine(str(export / report.model_file), report, 1, len(ids) + n + 8)

        servers = {name: TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0)
                   for name, repo in repos.items()}  # fmt: skip
        rates: dict[str, list[float]] = {"in-process loop": [], **{k: [] for k in repos}}
        cpu: dict[str, dict[str, float]] = {k: {} for k in repos}
        try:
            clients = {}
            for name, server in servers.items():
                server.start()
                clients[name] = LLMClient(server.grpc_url, protocol="grpc", model="llm")
                stream_rates(clients[name], n, 5)  # warm up
            for _ in range(args.rounds):
                loop = [engine_loop(engine, ids, n) for _ in range(args.requests)]
                rates["in-process loop"].append(statistics.median(n / t for _, t in loop))
                for name, client in clients.items():
                    server = servers[name]
                    pids = {"server": server.pid, "entry model (stub)": stub_pid(server.pid, "llm"),
                            "client": os.getpid()}  # fmt: skip
                    before = {k: cpu_seconds(p) for k, p in pids.items() if p}
                    rates[name].append(statistics.median(stream_rates(client, n, args.requests)))
                    tokens = n * args.requests
                    for k, p in pids.items():
                        if p:
                            spent = (cpu_seconds(p) - before[k]) / tokens * 1e3
                            cpu[name].setdefault(k, 0.0)
                            cpu[name][k] += spent / args.rounds
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()

    loop_rates = rates["in-process loop"]
    rows = []
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, loop_rates)]
        rows.append([name, statistics.median(values), statistics.median(ratios)])
    print(f"\ntiny-llama, {n} new tokens, greedy, concurrency 1; medians of {args.rounds} rounds")
    print(table(["path", "tok/s", "vs in-process loop (x)"], rows))
    for name, spent in cpu.items():
        print(f"\nCPU per streamed token, {name} (ms; the loop's whole step: "
              f"{1e3 / statistics.median(loop_rates):.3f} ms)")  # fmt: skip
        print(table(["process", "CPU ms per token"], [[k, v] for k, v in spent.items()]))


if __name__ == "__main__":
    main()
