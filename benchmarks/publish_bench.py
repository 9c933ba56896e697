"""Publish throughput vs a plain ``upload_blob`` of the same files, against a real Azurite.

    .venv/bin/python benchmarks/publish_bench.py [--size-mb 256] [--concurrency 8] [--repeat 5]

The repository is tiny-llama's (exported and built here) plus one random weights file of
``--size-mb`` (a stand-in for a real model's ``model.onnx.data``). Both sides upload the
same files with the same concurrency into fresh prefixes of one Azurite container:

- plain: a pool of ``--concurrency`` threads, one ``upload_blob(max_concurrency=C)`` per file;
- publish: ``tritonkit.blob.publish_repository(concurrency=C)``: validation, hashing,
  version claim, parallel block upload, verification, manifests, config.pbtxt.

Then the repository is re-published unchanged into the same prefix, and the bytes it
uploads are counted (target 0). Medians of interleaved runs; one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from _table import table  # noqa: E402
from azurite import Azurite  # noqa: E402

from tritonkit.blob import connect, publish_repository  # noqa: E402


def build(root: Path, size_mb: int) -> Path:
    """tiny-llama's repository plus a ``size_mb`` random weights file in the decoder."""
    from tritonkit.export import main_export
    from tritonkit.model_repository import build_repository

    main_export("tiny-llama", root / "export")
    repo = build_repository(root / "export", root / "repository").path
    with open(repo / "llm_decoder" / "1" / "weights.bin", "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1024 * 1024))
    return repo


def files_of(repo: Path) -> list[Path]:
    return [p for p in sorted(repo.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


def plain_upload(container: object, repo: Path, files: list[Path], concurrency: int) -> None:
    prefix = uuid.uuid4().hex

    def one(path: Path) -> None:
        with open(path, "rb") as f:
            container.upload_blob(  # type: ignore[attr-defined]
                f"{prefix}/{path.relative_to(repo)}", f, overwrite=True,
                max_concurrency=concurrency,
            )  # fmt: skip

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="random weights file size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = build(Path(tmp), args.size_mb)
        files = files_of(repo)
        total = sum(p.stat().st_size for p in files)
        azurite = Azurite().start()
        try:
            cs = azurite.connection_string()
            container = azurite.new_container()
            client = connect(container, connection_string=cs).client
            plain_s, publish_s, republish_s, republish_bytes = [], [], [], []
            for _ in range(args.repeat):  # interleaved: the machine's noise hits both sides
                t0 = time.perf_counter()
                plain_upload(client, repo, files, args.concurrency)
                plain_s.append(time.perf_counter() - t0)
                store = connect(container, uuid.uuid4().hex, connection_string=cs)
                t0 = time.perf_counter()
                publish_repository(repo, store, concurrency=args.concurrency)
                publish_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                again = publish_repository(repo, store, concurrency=args.concurrency)
                republish_s.append(time.perf_counter() - t0)
                republish_bytes.append(again.bytes_uploaded)
        finally:
            azurite.stop()

    mib = total / 2**20
    plain, publish, republish = (statistics.median(x) for x in (plain_s, publish_s, republish_s))
    rows = [
        ["plain upload_blob", plain, mib / plain, 1.0, f"{total:,}"],
        ["tritonkit publish", publish, mib / publish, plain / publish, f"{total:,}"],
        ["re-publish unchanged", republish, mib / republish, plain / republish,
         f"{int(statistics.median(republish_bytes)):,}"],
    ]  # fmt: skip
    print(
        f"{len(files)} files, {mib:.1f} MiB, concurrency {args.concurrency}, "
        f"median of {args.repeat} runs, Azurite on 127.0.0.1\n"
    )
    print(table(["", "seconds", "MiB/s", "throughput vs plain", "bytes uploaded"], rows))


if __name__ == "__main__":
    main()
