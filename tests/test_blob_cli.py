"""The publish / pull / versions commands against a real Azurite, and a killed publisher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azurite import KEY

from tritonkit.blob import list_versions, parse_as_url, triton_azure_env
from tritonkit.cli import run
from tritonkit.errors import UsageError
from tritonkit.model_repository import validate_repository

pytest_plugins = ["azurite"]
pytestmark = pytest.mark.slow


def cli(azurite: Any, container: str, *args: str) -> list[str]:
    return [*args, "--container", container, "--connection-string", azurite.connection_string()]


def test_publish_list_pull_promote_rollback_from_the_command_line(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = azurite.new_container()
    assert run(cli(azurite, c, "publish", str(blob_repos["a"]), "--prefix", "t", "--quiet")) == 0
    out = capsys.readouterr().out
    files = [p for p in blob_repos["a"].rglob("*/1/**/*") if p.is_file() and p.suffix != ".pyc"]
    assert "llm_decoder" in out and f"MiB ({len(files) - 1} files" in out  # all but decoder.json
    assert "3 new versions, 0 unchanged" in out
    # Unchanged: every model keeps its version and nothing is written.
    assert run(cli(azurite, c, "publish", str(blob_repos["a"]), "--prefix", "t", "--quiet")) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:4]}
    for model in ("llm_decoder", "llm", "llm_sync"):
        assert rows[model].split()[1:4] == ["unchanged,", "keeping", "v1"], rows[model]
        assert rows[model].split()[7:11] == ["0", "B", "0", "B"], rows[model]  # up, copied
    assert "every model equals its latest version; wrote 0 B (--force" in out
    # Other weights: new decoder and entry versions; the twin is the same.
    assert run(cli(azurite, c, "publish", str(blob_repos["b"]), "--prefix", "t", "--quiet")) == 0
    out = capsys.readouterr().out
    cols = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:4]}
    assert cols["llm_decoder"][1:3] == ["new", "v2"] and cols["llm"][1:3] == ["new", "v2"]
    assert cols["llm_sync"][1:4] == ["unchanged,", "keeping", "v1"]
    assert "2 new versions, 1 unchanged; wrote" in out
    assert run(cli(azurite, c, "versions", "list", "--prefix", "t", "--model", "llm")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["llm", "1", "complete"] and "*" not in lines[1]
    assert lines[2].split()[:4] == ["llm", "2", "complete", "*"]
    assert run(cli(azurite, c, "versions", "rollback", "--prefix", "t", "--model", "llm")) == 0
    assert "llm: serves 2 -> 1" in capsys.readouterr().out
    out_dir = tmp_path / "pulled"
    args = cli(azurite, c, "pull", "--prefix", "t", "--output", str(out_dir), "--quiet")
    assert run(args) == 0
    out = capsys.readouterr().out
    assert f"next: tritonkit serve --repository {out_dir}" in out
    assert validate_repository(out_dir).ok
    assert "version_policy" in (out_dir / "llm" / "config.pbtxt").read_text()
    with pytest.raises(UsageError, match="either --container"):
        run(["versions", "list"])
    # --force: a new version of every model, all of it copied server-side.
    args = cli(azurite, c, "publish", str(blob_repos["b"]), "--prefix", "t", "--quiet", "--force")
    assert run(args) == 0
    out = capsys.readouterr().out
    assert [ln.split()[1:3] for ln in out.splitlines()[1:4]] == [["new", "v3"], ["new", "v3"],
                                                                 ["new", "v2"]]  # fmt: skip
    assert "uploaded 0 B (0 files)" in out


def test_account_url_defaults_to_the_environment(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    c = azurite.new_container()
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite.account_url)
    monkeypatch.setenv("AZURE_STORAGE_KEY", KEY)
    key = ["--container", c, "--credential", "key"]
    assert run(["publish", str(blob_repos["a"]), *key, "--quiet"]) == 0
    assert run(["versions", "list", *key]) == 0
    assert run(["pull", *key, "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert validate_repository(tmp_path / "out").ok
    # A flag beats the environment, both ways round.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "http://127.0.0.1:9/nowhere")
    assert run(cli(azurite, c, "versions", "list")) == 0
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string("d3Jvbmc="))
    assert run(["versions", "list", *key, "--account-url", azurite.account_url]) == 0
    capsys.readouterr()
    for command in (["publish", "REPO"], ["pull"], ["versions", "list"]):
        with pytest.raises(SystemExit):
            run([*command, "--help"])
        assert "$AZURE_STORAGE_ACCOUNT_URL" in " ".join(capsys.readouterr().out.split())


def test_errors_are_one_line_on_stderr(azurite: Any, blob_repos: dict[str, Path]) -> None:
    c = azurite.new_container()
    wrong = azurite.connection_string(key="d3Jvbmcga2V5" * 4)
    cases = {
        "rejected the credentials|refused access": [
            "publish", str(blob_repos["a"]), "--container", c, "--connection-string", wrong,
        ],
        "does not exist in devstoreaccount1; check --container": [
            "publish", str(blob_repos["a"]), "--container", "missing", "--connection-string",
            azurite.connection_string(),
        ],
        "no published model repository under": [
            "versions", "list", "--container", c, "--prefix", "empty", "--connection-string",
            azurite.connection_string(),
        ],
    }  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1"}
    for pattern, args in cases.items():
        proc = subprocess.run(
            [sys.executable, "-m", "tritonkit", *args], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("tritonkit: error: "), proc.stderr
        assert any(p in lines[0] for p in pattern.split("|")), lines[0]


STALLING_PUBLISH = """
import sys, threading
from tritonkit.blob.upload import Uploader
from tritonkit.cli import run
real, done = Uploader.upload, []
def stalled(self, item):
    digests = real(self, item)
    done.append(item)
    if len(done) == 2:
        print("STALLED", flush=True)
        threading.Event().wait()  # hang here until killed
    return digests
Uploader.upload = stalled
sys.exit(run(sys.argv[1:]))
"""


def test_killed_publisher_leaves_nothing_visible_and_the_next_publish_takes_over(
    azurite: Any, blob_repos: dict[str, Path], tmp_path: Path
) -> None:
    c = azurite.new_container()
    store = azurite.store(c)
    base = cli(azurite, c, "publish", str(blob_repos["a"]), "--quiet")
    assert run(base) == 0
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLING_PUBLISH, *cli(azurite, c, "publish", str(blob_repos["b"]),
                                                       "--quiet", "--concurrency", "1")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "STALLED"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = {(r.model, r.version): r for r in list_versions(store)}
    assert not rows[("llm_decoder", 2)].complete and rows[("llm_decoder", 1)].served
    assert store.names("llm_decoder/2")  # half a version is there, invisible
    # The dead publisher's lease on version 2 runs out within 15 s; then 2 is taken over.
    claim = store.blob("llm_decoder", "2.claim")
    deadline = time.monotonic() + 30
    while claim.get_blob_properties().lease.state == "leased" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run(cli(azurite, c, "publish", str(blob_repos["b"]), "--quiet")) == 0
    rows = {(r.model, r.version): r for r in list_versions(store)}
    assert rows[("llm_decoder", 2)].complete and rows[("llm_decoder", 2)].served
    assert max(v for m, v in rows if m == "llm_decoder") == 2  # replaced, not skipped


def test_serving_env_for_triton_as_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_as_url("as://acct/models/team/tiny") == ("acct", "models", "team/tiny")
    env = triton_azure_env("as://acct/models", environ={"AZURE_STORAGE_KEY": "k"})
    assert env == {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"}
    env = triton_azure_env("as://acct/models/p", "managed_identity", client_id="id", environ={})
    assert env == {
        "AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_AUTH_TYPE": "managed_identity",
        "AZURE_STORAGE_CLIENT_ID": "id",
    }  # fmt: skip
    with pytest.raises(UsageError, match="needs AZURE_STORAGE_KEY"):
        triton_azure_env("as://acct/models", environ={})
    with pytest.raises(UsageError, match="is not as://"):
        parse_as_url("/local/repo")
    # `tritonkit serve` hands it to Triton, and refuses before starting one without a key.
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    with pytest.raises(UsageError, match="needs AZURE_STORAGE_KEY"):
        run(["serve", "--repository", "as://acct/models/tiny"])
