"""The deployment, hardened, checked the way it runs.

* deploy/triton-entrypoint.sh refuses to start without an admin key and restricts every
  API the stack does not need; a real Triton started with exactly the flags it writes
  refuses those APIs without the key and serves health, metadata, config and inference.
* ``tritonkit versions --server`` sends the key from ``$TRITON_ADMIN_KEY`` (or
  ``--triton-header``), so live version switches work against that server.
* model-sync pulls into a folder inside the models volume as a non-root user whose home
  and the volume's parent are not writable; pulling onto the volume's mount point itself
  (what compose.yaml did, which could never finish) is refused up front.
"""

from __future__ import annotations

import copy
import ctypes
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import yaml
from servers import toy_server, wait_until
from tritonclient.utils import InferenceServerException
from twins import TWIN_IDS, TWINS, open_twin

from tritonkit.blob import publish_repository, pull_repository
from tritonkit.blob.live import ADMIN_KEY_HEADER, admin_headers
from tritonkit.cli import run
from tritonkit.client import APIRestricted, ConnectionFailed, LLMClient
from tritonkit.client._base import GRPC_ADMIN_KEY_HEADER, HTTP_ADMIN_KEY_HEADER
from tritonkit.errors import ClientError, UsageError

pytest_plugins = ["azurite"]
ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "deploy" / "triton-entrypoint.sh"
KEY = "k3y-for-tests-0123456789"
RESTRICTED = ("model-repository", "shared-memory", "statistics", "trace", "logging")


def _entrypoint(
    tmp_path: Path, env: dict[str, str], help_text: str = ""
) -> tuple[int, list[str], str]:
    """Run the real entrypoint with a stand-in ``tritonserver`` on PATH that prints the
    arguments it was given (and ``help_text`` for ``--help``): (exit code, args, stderr)."""
    fake = tmp_path / "bin" / "tritonserver"
    fake.parent.mkdir(exist_ok=True)
    help_file = tmp_path / "help.txt"
    help_file.write_text(help_text)
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = --help ]; then cat {help_file}; exit 0; fi\n'
        'for a in "$@"; do echo "$a"; done\n'
    )
    fake.chmod(0o755)
    base = {"PATH": f"{fake.parent}:/usr/bin:/bin", "MODEL_NAME": "llm"}
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT)], env={**base, **env}, capture_output=True, text=True, timeout=30
    )
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def test_entrypoint_refuses_to_start_without_an_admin_key(tmp_path):
    code, args, err = _entrypoint(tmp_path, {})
    assert code == 64 and args == [] and "set TRITON_ADMIN_KEY" in err
    code, args, _ = _entrypoint(tmp_path, {"TRITON_ADMIN_KEY": ""})
    assert code == 64 and args == []
    # an Azure ML secret that was not injected, and a key anyone could guess
    for weak in ("${{azureml://connections/c/credentials/admin-key}}", "short"):
        code, args, err = _entrypoint(tmp_path, {"TRITON_ADMIN_KEY": weak})
        assert code == 64 and args == [] and "placeholder or shorter" in err, weak


def test_entrypoint_restricts_every_api_the_stack_does_not_need(tmp_path):
    code, args, _ = _entrypoint(tmp_path, {"TRITON_ADMIN_KEY": KEY})
    assert code == 0
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
        apis, _, key = value.partition(":")
        assert set(apis.split(",")) == set(RESTRICTED) and key == f"admin-key={KEY}"
    assert "--model-repository=/models/repository" in args
    assert not any(a.startswith("--grpc-max-response-pool-size") for a in args)  # 24.10
    newer = "  --grpc-max-response-pool-size <integer>\n"
    _, args, _ = _entrypoint(tmp_path, {"TRITON_ADMIN_KEY": KEY}, help_text=newer)
    assert "--grpc-max-response-pool-size=512" in args


def _release_folder(folder: Path) -> str:
    """A small release folder as KServe would download it; returns release.json's SHA-256."""
    import hashlib

    from tritonkit.blob.release import Release, ReleaseFile

    files = {"llm/config.pbtxt": b'name: "llm"\n', "llm/1/model.py": b"print('hi')\n"}
    listed = []
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        listed.append(ReleaseFile(rel, len(data), hashlib.sha256(data).hexdigest()))
    doc = Release(1, "2025-01-01T00:00:00+00:00", "test", {"llm": [1]}, listed).to_json()
    (folder / "release.json").write_bytes(doc)
    return hashlib.sha256(doc).hexdigest()


def _tritonkit_on_path(tmp_path: Path) -> None:
    """A ``tritonkit`` in the entrypoint's PATH (``tmp_path/bin``) running this tree's CLI."""
    cli = tmp_path / "bin" / "tritonkit"
    cli.parent.mkdir(exist_ok=True)
    path = os.environ.get("PYTHONPATH", "")
    cli.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec {sys.executable} -m tritonkit "$@"\n')
    cli.chmod(0o755)


def test_entrypoint_refuses_a_repository_of_the_other_engine(tmp_path):
    """The image names its engine (/etc/tritonkit/engine); the entrypoint reads the entry
    model's with the real `tritonkit repo engine` and refuses a mismatch before Triton
    starts, saying what to set. No engine file (a plain run): no check."""
    from tritonkit.model_repository import config as cfg

    repo = tmp_path / "repo"
    for name, config in (
        ("llm", cfg.vllm_entry_config("llm", "gpu", max_batch_size=8, max_context=2048)),
        ("ort", cfg.entry_config("ort", "ort_decoder", "gpu", max_batch_size=8, max_context=64)),
    ):
        (repo / name).mkdir(parents=True)
        cfg.write(config, repo / name)
    _tritonkit_on_path(tmp_path)
    engine_file = tmp_path / "engine"
    env = {"TRITON_ADMIN_KEY": KEY, "MODEL_REPOSITORY": str(repo),
           "TRITONKIT_ENGINE_FILE": str(engine_file)}  # fmt: skip
    engine_file.write_text("onnxruntime\n")
    code, args, err = _entrypoint(tmp_path, env)
    assert code == 66 and args == [], err
    assert "built with --engine vllm and this image serves --engine onnxruntime" in err
    assert "TRITONKIT_ENGINE=vllm" in err
    code, args, err = _entrypoint(tmp_path, {**env, "MODEL_NAME": "ort"})
    assert code == 0 and f"--model-repository={repo}" in args, err
    engine_file.write_text("vllm\n")
    code, args, err = _entrypoint(tmp_path, env)
    assert code == 0 and "--load-model=llm" in args, err
    code, args, err = _entrypoint(tmp_path, {**env, "MODEL_NAME": "missing"})
    assert code == 66 and "cannot read the entry model missing" in err
    engine_file.unlink()
    code, args, err = _entrypoint(tmp_path, {**env, "MODEL_NAME": "missing"})
    assert code == 0, err  # no engine file: nothing to compare with


def test_entrypoint_verifies_a_pinned_release_before_starting_triton(tmp_path):
    """TRITONKIT_RELEASE_SHA256 set: the real `tritonkit release verify` runs first (through
    a `tritonkit` on PATH that runs this tree's), and a mismatch never starts Triton."""
    models = tmp_path / "mnt" / "models"
    digest = _release_folder(models)
    _tritonkit_on_path(tmp_path)
    env = {"TRITON_ADMIN_KEY": KEY, "MODEL_REPOSITORY": str(models)}
    code, args, err = _entrypoint(tmp_path, {**env, "TRITONKIT_RELEASE_SHA256": digest})
    assert code == 0, err
    assert f"--model-repository={models}" in args  # the stand-in tritonserver ran
    for broken in ("f" * 64, "not-hex"):
        code, args, err = _entrypoint(tmp_path, {**env, "TRITONKIT_RELEASE_SHA256": broken})
        assert code == 65 and args == [] and "not the release pinned" in err, err
    (models / "llm" / "1" / "model.py").write_bytes(b"import os; os.system('evil')\n")
    code, args, err = _entrypoint(tmp_path, {**env, "TRITONKIT_RELEASE_SHA256": digest})
    assert code == 65 and args == [] and "model.py" in err
    remote = {**env, "MODEL_REPOSITORY": "as://acct/c/p", "TRITONKIT_RELEASE_SHA256": digest}
    code, args, err = _entrypoint(tmp_path, remote)
    assert code == 65 and args == [] and "downloaded release folder" in err


@pytest.fixture(scope="module")
def hardened(tmp_path_factory) -> Iterator[object]:
    """A real Triton with exactly the restriction flags the entrypoint writes."""
    tmp = tmp_path_factory.mktemp("entry")
    _, args, _ = _entrypoint(tmp, {"TRITON_ADMIN_KEY": KEY})
    flags = [a for a in args if a.startswith(("--http-restricted", "--grpc-restricted"))]
    assert len(flags) == 2
    with toy_server(model_control_mode="explicit", load_models=["llm"], extra_args=flags) as s:
        yield s


def test_hardened_triton_refuses_restricted_apis_without_the_key(hardened):
    url, http = hardened.grpc_url, f"http://{hardened.http_url}"
    with grpcclient.InferenceServerClient(url) as client:
        for call in (
            lambda: client.get_model_repository_index(),
            lambda: client.get_inference_statistics("llm"),
            lambda: client.get_log_settings(),
            lambda: client.get_trace_settings(),
            lambda: client.get_system_shared_memory_status(),
            lambda: client.unload_model("llm"),
        ):
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        assert client.is_model_ready("llm")  # the unload above was refused
        # Open: health, metadata, the config (the chat template lives there), inference.
        assert client.is_server_ready() and client.get_model_metadata("llm").name == "llm"
        assert client.get_model_config("llm").config.name == "llm"
        index = client.get_model_repository_index(headers={ADMIN_KEY_HEADER: KEY})
        assert [m.name for m in index.models] == ["llm"]
    for path in ("/v2/repository/index", "/v2/logging", "/v2/models/llm/stats"):
        method = httpx.post if "index" in path else httpx.get
        refused = method(http + path)
        assert refused.status_code in (401, 403) or "restricted" in refused.text, path
        allowed = method(http + path, headers={"admin-key": KEY})
        assert allowed.status_code == 200, (path, allowed.text)
    assert httpx.get(http + "/v2/health/ready").status_code == 200
    with LLMClient(url, model="llm") as llm:
        assert llm.generate("one two three", max_tokens=3).num_output_tokens == 3


def test_versions_on_a_hardened_server_use_the_admin_key_from_the_environment(
    hardened, monkeypatch, capsys
):
    url = hardened.grpc_url
    monkeypatch.delenv("TRITON_ADMIN_KEY", raising=False)
    with pytest.raises(ClientError, match=r"restricts this API: set \$TRITON_ADMIN_KEY"):
        run(["versions", "list", "--server", url])
    monkeypatch.setenv("TRITON_ADMIN_KEY", KEY)  # the key never appears on a command line
    assert run(["versions", "list", "--server", url, "--model", "llm"]) == 0
    assert "READY" in capsys.readouterr().out
    assert run(["versions", "promote", "--model", "llm", "--version", "1", "--server", url]) == 0
    assert "serves 1 -> 1" in capsys.readouterr().out
    monkeypatch.delenv("TRITON_ADMIN_KEY")
    header = f"{ADMIN_KEY_HEADER}={KEY}"
    assert run(["versions", "list", "--server", url, "--triton-header", header]) == 0


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_client_twins_load_and_unload_with_the_admin_key_only(hardened, twin):
    kind, protocol = twin
    url = hardened.grpc_url if protocol == "grpc" else hardened.http_url
    with open_twin(kind, url, protocol, model="llm") as client:
        for refused in (client.unload_model, client.load_model):
            with pytest.raises(APIRestricted, match="restricted") as info:
                refused()
            assert "\n" not in str(info.value)
            assert isinstance(info.value, ConnectionFailed)  # as the gateway expects
        assert client.is_model_ready()  # nothing was unloaded
        config = client.model_config()
        slower = copy.deepcopy(config)
        slower["parameters"]["piece_delay_s"]["string_value"] = "0.005"
        client.load_model(config=slower, admin_key=KEY)  # a config override travels
        assert client.model_config()["parameters"]["piece_delay_s"]["string_value"] == "0.005"
        client.unload_model(admin_key=KEY)
        wait_until(lambda: not client.is_model_ready(), what="llm to unload")
        # The key as a header of the call, under the name this protocol's restriction reads.
        header = GRPC_ADMIN_KEY_HEADER if protocol == "grpc" else HTTP_ADMIN_KEY_HEADER
        client.load_model(config=config, headers={header: KEY})
        assert client.is_model_ready()
        assert client.model_config()["parameters"]["piece_delay_s"] == {"string_value": "0.002"}
        assert client.generate("one two three", max_tokens=2).num_output_tokens == 2


def test_admin_headers_parse_pairs_and_prefer_an_explicit_key():
    assert admin_headers([], {"TRITON_ADMIN_KEY": "e"}) == {ADMIN_KEY_HEADER: "e"}
    given = admin_headers([f"{ADMIN_KEY_HEADER.upper()}=x", "a=b=c"], {"TRITON_ADMIN_KEY": "e"})
    assert given == {ADMIN_KEY_HEADER: "x", "a": "b=c"}
    assert admin_headers([], {}) == {}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        admin_headers(["novalue"], {})


# ---- model-sync into the models volume, as the image's non-root user ----------------------

UID = 1001  # the image's tritonkit user (Dockerfile)


def test_compose_pulls_into_a_folder_inside_the_volume():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    pull = services["model-sync"]["command"]
    assert "--output=/models/repository" in pull
    assert services["triton"]["environment"]["MODEL_REPOSITORY"] == "/models/repository"
    assert "--repository=/models/repository" in services["gateway"]["command"]
    assert "--output=/models" not in pull  # the volume's mount point cannot be replaced


@pytest.fixture(scope="module")
def published(azurite, blob_repos):
    """tiny-llama's repository published to the session's Azurite; its store."""
    store = azurite.store(azurite.new_container(), "tiny")
    publish_repository(blob_repos["a"], store)
    return store


def _volume() -> Path:
    """A stand-in for the models volume: /tmp/X (root-owned, 0755) / models (owned by UID)."""
    parent = Path(tempfile.mkdtemp(prefix="tritonkit-vol-"))
    parent.chmod(0o755)
    volume = parent / "models"
    volume.mkdir()
    os.chown(volume, UID, UID)
    return volume


def _pull_as_user(store, output: Path, mount: Path | None, queue) -> None:
    """In a forked child: optionally bind-mount ``mount`` onto ``output`` in a private
    mount namespace, drop to UID with an unwritable home, then pull."""
    try:
        if mount is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
                raise OSError(ctypes.get_errno(), "unshare")
            subprocess.run(["mount", "--make-rprivate", "/"], check=True)
            subprocess.run(["mount", "--bind", str(mount), str(output)], check=True)
        os.setgroups([])
        os.setgid(UID)
        os.setuid(UID)
        os.environ["HOME"] = "/nonexistent"
        result = pull_repository(store, output, force=True)
        queue.put(("ok", sorted(result.served)))
    except Exception as exc:  # reported to the parent, which asserts on it
        queue.put((type(exc).__name__, str(exc)))


def _in_child(*args) -> tuple[str, object]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pull_as_user, args=(*args, queue))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    return queue.get(timeout=5)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_model_sync_pulls_as_a_non_root_user_into_the_volume(published, tmp_path):
    pull_repository(published, tmp_path / "warm")  # imports every module before the fork
    volume = _volume()
    try:
        status, detail = _in_child(published, volume / "repository", None)
        assert status == "ok", detail
        repo = volume / "repository"
        assert (repo / "llm" / "config.pbtxt").is_file() and repo.stat().st_uid == UID
        assert sorted(p.name for p in volume.parent.iterdir()) == ["models"]  # nothing beside
        assert sorted(p.name for p in volume.iterdir()) == ["repository"]  # no cache left
        # What compose.yaml did before: the volume itself as the output; its parent is not
        # the user's to write, so the pull fails with one clear line and writes nothing.
        status, detail = _in_child(published, volume, None)
        assert status == "BlobError" and f"cannot write to {volume.parent}" in str(detail)
        assert sorted(p.name for p in volume.parent.iterdir()) == ["models"]
    finally:
        shutil.rmtree(volume.parent)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_pulling_onto_a_mount_point_is_refused_before_anything_is_written(published, tmp_path):
    pull_repository(published, tmp_path / "warm")
    volume, source = _volume(), _volume()
    try:
        status, detail = _in_child(published, volume, source)
        assert status == "UsageError", detail
        assert "is a mount point" in str(detail) and f"{volume}/repository" in str(detail)
        assert list(source.iterdir()) == [] and list(volume.iterdir()) == []
    finally:
        shutil.rmtree(volume.parent)
        shutil.rmtree(source.parent)


# ---- the server's cache folder in a shared /tmp -------------------------------------------


def test_fallback_cache_folder_is_used_only_when_private_and_ours(tmp_path, monkeypatch):
    from tritonkit.serve import binary

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the usual place cannot be made
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    squatted = tmp_path / f"tritonkit-{os.getuid()}"
    squatted.mkdir(mode=0o777)
    squatted.chmod(0o777)  # made first by someone else: world-writable
    chosen = binary.cache_root()
    assert chosen != squatted and chosen.parent == tmp_path
    assert chosen.stat().st_uid == os.getuid() and chosen.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        squatted.chmod(0o700)
        os.chown(squatted, UID, UID)  # private, but another user's
        assert binary.cache_root() not in (squatted,)
        os.chown(squatted, 0, 0)
    squatted.chmod(0o700)
    assert binary.cache_root() == squatted  # ours and private: reused


# ---- secrets stay out of images -------------------------------------------------------------


def test_secrets_never_enter_a_build_context_and_images_copy_only_the_package():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".env*", "gateway_api_keys*.txt", "tls", "*.pem", "*.key"):
        assert pattern in ignored, pattern
    assert "!.env.example" in ignored
    for dockerfile in ("Dockerfile", "deploy/engine.Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        assert "COPY . " not in text, dockerfile  # the whole context: keys, outputs, tests
    # both az scripts (VM and AKS) source the one storage block
    for script in ("azure/create_vm.sh", "aks/create_cluster.sh"):
        assert '/storage.sh"' in (ROOT / "deploy" / script).read_text(), script
    storage = (ROOT / "deploy" / "azure" / "storage.sh").read_text()
    assert "--allow-shared-key-access false" in storage
