"""Publish throughput vs a plain ``upload_blob``, and the storage each publish writes, in Azurite.

    .venv/bin/python benchmarks/publish_bench.py [--size-mb 256] [--concurrency 8] [--repeat 5]

The repository is tiny-llama's (exported and built here) plus one random weights file of
``--size-mb`` (a stand-in for a real model's ``model.onnx.data``). Both sides upload the
same files with the same concurrency into fresh prefixes of one Azurite container:

- plain: a pool of ``--concurrency`` threads, one ``upload_blob(max_concurrency=C)`` per file;
- publish: ``tritonkit.blob.publish_repository(concurrency=C)``: validation, hashing,
  version claim, parallel block upload, verification, manifests, config.pbtxt.

Then the repository is re-published unchanged into the same prefix, and the bytes it
uploads are counted (target 0). Medians of interleaved runs; one table.

A second table: the storage each kind of publish writes into a prefix that holds the
repository's first publish: the first publish itself, an unchanged re-publish, a
repository rebuilt with only its chat template edited, one with only its tokenizer config
edited, and an unchanged re-publish with ``--force`` (what every re-publish wrote before
publishing became idempotent). "written" is measured on the container (the sizes of the
blobs created or rewritten, from listings before and after), next to what the publish
reports it uploaded, copied server-side and wrote as manifests, configs and claims
(one run: the bytes do not vary).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from _table import table  # noqa: E402
from azurite import Azurite  # noqa: E402

from tritonkit.blob import PublishResult, connect, publish_repository  # noqa: E402

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


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


def edit_template(export: Path) -> None:
    (export / "chat_template.jinja").write_text(TEMPLATE)


def edit_tokenizer(export: Path) -> None:
    path = export / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_max_length": 4096}))


def rebuild(root: Path, repo: Path, name: str, edit: Callable[[Path], None]) -> Path:
    """``repo`` rebuilt from a copy of its export with ``edit`` applied; the same weights."""
    from tritonkit.model_repository import build_repository

    export = root / f"export-{name}"
    shutil.copytree(root / "export", export)
    edit(export)
    out = build_repository(export, root / f"repository-{name}").path
    os.link(repo / "llm_decoder" / "1" / "weights.bin", out / "llm_decoder" / "1" / "weights.bin")
    return out


def listing(store: object) -> dict[str, tuple[str, int]]:
    """name -> (etag, size) of every blob under the store's prefix."""
    start = store.name("") + "/"  # type: ignore[attr-defined]
    blobs = store.client.list_blobs(name_starts_with=start)  # type: ignore[attr-defined]
    return {b.name: (str(b.etag), int(b.size)) for b in blobs}


def written(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> int:
    """Bytes of the blobs created or rewritten between two listings."""
    return sum(size for n, (etag, size) in after.items() if before.get(n, ("", 0))[0] != etag)


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
    logging.getLogger("azure").setLevel(logging.WARNING)  # the export turns INFO logging on

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
            repos = {
                name: rebuild(Path(tmp), repo, name, edit)
                for name, edit in (("template", edit_template), ("tokenizer", edit_tokenizer))
            }
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
            storage = storage_run(container, cs, repo, repos, args.concurrency)  # bytes: one run
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

    print("\nstorage written per publish (into a prefix holding the first publish):\n")
    rows = []
    for case, seconds, measured, result in storage:
        new = [f"{m.model} v{m.version}" for m in result.models if m.changed]
        s = result.stats
        rows.append(
            [case, ", ".join(new) or "none", f"{s.bytes_uploaded:,}", f"{s.bytes_copied:,}",
             f"{s.bytes_metadata:,}", f"{measured:,}", seconds]
        )  # fmt: skip
    headers = ["", "new versions", "uploaded", "copied server-side",
               "manifests, configs, claims", "written (container)", "seconds"]  # fmt: skip
    print(table(headers, rows))


def storage_run(
    container: str, cs: str, repo: Path, repos: dict[str, Path], concurrency: int
) -> list[tuple[str, float, int, PublishResult]]:
    """(case, seconds, bytes written as measured on the container, result) per case."""
    out = []
    first_store = connect(container, uuid.uuid4().hex, connection_string=cs)
    cases: list[tuple[str, Path, bool]] = [
        ("unchanged re-publish", repo, False),
        ("chat template edited", repos["template"], False),
        ("tokenizer config edited", repos["tokenizer"], False),
        ("re-publish --force (as before)", repo, True),
    ]
    for case, source, force in [("first publish", repo, False), *cases]:
        store = first_store
        if case != "first publish":  # each case starts from a fresh first publish
            store = connect(container, uuid.uuid4().hex, connection_string=cs)
            publish_repository(repo, store, concurrency=concurrency)
        before = listing(store)
        t0 = time.perf_counter()
        result = publish_repository(source, store, force=force, concurrency=concurrency)
        seconds = time.perf_counter() - t0
        measured = written(before, listing(store))
        if measured != result.bytes_written:
            raise SystemExit(f"{case}: reported {result.bytes_written:,} B, wrote {measured:,} B")
        out.append((case, seconds, measured, result))
    return out


if __name__ == "__main__":
    main()
