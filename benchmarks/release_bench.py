"""What a release costs a new replica at start, per GB: download and verification, in Azurite.

    .venv/bin/python benchmarks/release_bench.py [--repeat 3] [--concurrency 8]

The real SmolLM2-135M-Instruct repository (the test run's cached float32 export, built
here) is published to a local Azurite and frozen as a release. Then, interleaved per round:

- plain download: every blob under ``releases/R/`` with ``download_blob`` in a pool of
  ``--concurrency`` threads, no checks: what KServe's storage initializer does;
- ``pull_release``: tritonkit's pull of the same release, each file's SHA-256 checked
  against ``release.json`` (pinned with ``expect_sha256``);
- ``verify_release_dir``: the check the image's entrypoint runs on ``/mnt/models`` before
  Triton starts when ``TRITONKIT_RELEASE_SHA256`` is set (read and hash what is on disk).

Also timed once: ``create_release`` (server-side copies inside the account). Azurite on
loopback shares this machine's two cores with the client, so the absolute rates are a
floor for disk and CPU, not Azure's network; the verification cost per GB carries over
(it is hashing on the pod). Medians; one table.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from _table import table  # noqa: E402
from azurite import Azurite  # noqa: E402
from real_model import cached_export  # noqa: E402

from tritonkit.blob import create_release, publish_repository, pull_release  # noqa: E402
from tritonkit.blob.manifest import RELEASES, release_folder  # noqa: E402
from tritonkit.blob.release import verify_release_dir  # noqa: E402


def plain_download(store: object, folder: str, out: Path, concurrency: int) -> int:
    """Every blob under ``folder`` of the store's prefix into ``out``; returns bytes."""
    client = store.client  # type: ignore[attr-defined]
    start = store.name(folder) + "/"  # type: ignore[attr-defined]
    blobs = list(client.list_blobs(name_starts_with=start))

    def one(name: str) -> int:
        dest = out / name[len(start) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            return client.download_blob(name, max_concurrency=4).readinto(f)

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(one, [b.name for b in blobs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    logging.getLogger("azure").setLevel(logging.WARNING)
    from tritonkit.model_repository import build_repository

    work = Path(tempfile.mkdtemp(prefix="release-bench-"))
    azurite = Azurite().start()
    try:
        repo = build_repository(cached_export(), work / "repository").path
        store = azurite.store(azurite.new_container(), "smollm2")
        publish_repository(repo, store, concurrency=args.concurrency, progress=False)
        t0 = time.perf_counter()
        release = create_release(store, concurrency=args.concurrency)
        create_s = time.perf_counter() - t0
        gb = release.size / 1e9
        times: dict[str, list[float]] = {"plain": [], "pull": [], "verify": []}
        for r in range(args.repeat):
            out = work / f"plain-{r}"
            t0 = time.perf_counter()
            plain_download(store, f"{RELEASES}/{release_folder(release.number)}", out,
                           args.concurrency)  # fmt: skip
            times["plain"].append(time.perf_counter() - t0)
            shutil.rmtree(out)
            out = work / f"pull-{r}"
            t0 = time.perf_counter()
            pull_release(store, out, release.number, concurrency=args.concurrency,
                         expect_sha256=release.sha256)  # fmt: skip
            times["pull"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            verify_release_dir(out, release.sha256)
            times["verify"].append(time.perf_counter() - t0)
            shutil.rmtree(out)
    finally:
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)
    plain = statistics.median(times["plain"])
    rows = [("create_release (server-side copies)", create_s, create_s / gb, "-")]
    for label, key in (
        ("plain download (storage initializer)", "plain"),
        ("pull_release (download + SHA-256 per file)", "pull"),
        ("verify_release_dir (entrypoint, on disk)", "verify"),
    ):
        s = statistics.median(times[key])
        rows.append((label, s, s / gb, f"{s / plain:.2f}"))
    print(f"release {release.number}: {release.files} files, {release.size / 2**20:.0f} MiB, "
          f"{args.repeat} rounds, concurrency {args.concurrency}\n")  # fmt: skip
    print(table(["step", "median s", "s per GB", "vs plain download (x)"], rows))


if __name__ == "__main__":
    main()
