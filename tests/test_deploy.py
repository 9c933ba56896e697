"""The GPU-VM deployment files, checked statically (no Docker engine, no GPU, no Azure here).

compose.yaml is validated by Debian's docker-compose, cloud-init by ``cloud-init schema``,
shell scripts by shellcheck; the flags they pass are checked against what tritonserver
and tritonkit accept. What needs a GPU (TensorRT) is checked for its clear refusal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonkit import versions
from tritonkit.cli import build_parser, run
from tritonkit.errors import ExportError, UsageError
from tritonkit.versions import TRITON_TAG

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("docker-compose", "shellcheck", "cloud-init")),
    reason="run scripts/install_deploy_tools.sh (make setup does)",
)


def _compose_config(
    compose: Path, tmp_path: Path, env_text: str | None = None
) -> subprocess.CompletedProcess:
    env_file = tmp_path / "env"
    text = env_text or (ROOT / ".env.example").read_text()
    env_file.write_text(text.replace("TRITON_ADMIN_KEY=\n", "TRITON_ADMIN_KEY=secret\n"))
    keys = tmp_path / "keys.txt"
    keys.write_text("k\n")
    env = {**os.environ, "GATEWAY_API_KEYS_FILE": str(keys)}
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(compose), "--profile", "local",
         "--profile", "engine", "--profile", "blob-direct", "config"],
        capture_output=True, text=True, env=env, cwd=compose.parent, timeout=60,
    )  # fmt: skip


def test_compose_file_is_valid(tmp_path):
    result = _compose_config(ROOT / "compose.yaml", tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"model-sync", "triton", "triton-blob", "gateway", "engine", "azurite"}
    triton = services["triton"]
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert triton["restart"] == "unless-stopped"
    assert triton["healthcheck"]["test"] == ["CMD", "tritonkit", "probe"]  # sees a broken engine
    assert triton["depends_on"]["model-sync"]["condition"] == "service_completed_successfully"

    # Triton listens on the VM's loopback; the gateway is the only public port.
    def host_ip(port) -> str:  # "127.0.0.1:8000:8000", "9000:9000" or a long-form mapping
        if isinstance(port, dict):
            return str(port.get("host_ip", "0.0.0.0"))
        parts = str(port).split(":")
        return parts[0] if len(parts) == 3 else "0.0.0.0"

    published = {s: [host_ip(p) for p in v.get("ports", [])] for s, v in services.items()}
    assert set(published["triton"]) == {"127.0.0.1"}
    assert published["gateway"] == ["0.0.0.0"]
    assert triton["environment"]["TRITON_ADMIN_KEY"] == "secret"
    assert services["azurite"]["profiles"] == ["local"]
    assert services["engine"]["profiles"] == ["engine"]
    # The engine picks the image: its build arg and its name, for every service using it.
    assert triton["build"]["args"]["ENGINE"] == "onnxruntime"
    assert triton["image"].endswith("-onnxruntime")
    env_text = (
        (ROOT / ".env.example")
        .read_text()
        .replace("TRITONKIT_ENGINE=onnxruntime", "TRITONKIT_ENGINE=vllm")
    )
    vllm = yaml.safe_load(_compose_config(ROOT / "compose.yaml", tmp_path, env_text).stdout)
    for name in ("model-sync", "triton", "gateway"):
        service = vllm["services"][name]
        assert service["image"] == "tritonkit-triton:26.08-vllm", name
        assert service["build"]["args"]["ENGINE"] == "vllm"


def test_the_image_is_built_per_engine():
    """The Dockerfile's stages: ENGINE=onnxruntime adds tritonkit's packages to NGC's -py3
    image; ENGINE=vllm builds on NGC's -vllm-python-py3 image, checks its vLLM has the
    API the entry model uses, and keeps tritonkit out of vLLM's Python (a venv of its own:
    tritonclient's numpy<2 must not replace the numpy vLLM was built with)."""
    text = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM (\S+) AS base-(\w+)$", text, re.M))
    assert stages == {
        "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3": "onnxruntime",
        "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-vllm-python-py3": "vllm",
    }
    assert set(stages.values()) == set(versions.IMAGE_ENGINES)
    assert "FROM base-${ENGINE}" in text and "ARG ENGINE=onnxruntime" in text
    assert text.count("versions.py check-vllm") == 2  # the base's vLLM, and after tritonkit
    assert "/opt/tritonkit-venv" in text and 'echo "${ENGINE}" > /etc/tritonkit/engine' in text
    # check-vllm is the real check: it passes in vLLM's environment and fails without vLLM.
    vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
    script = str(ROOT / "tritonkit" / "versions.py")
    if vllm_python.exists():
        ok = subprocess.run([str(vllm_python), script, "check-vllm"], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
        assert ok.returncode == 0 and f">= {versions.VLLM_MIN}" in ok.stdout, ok.stderr
    bare = subprocess.run([sys.executable, "-S", script, "check-vllm"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert bare.returncode == 1 and "cannot import what tritonkit's vLLM entry model" in bare.stderr


def test_broken_compose_file_is_rejected(tmp_path):
    broken = tmp_path / "compose.yaml"
    text = (ROOT / "compose.yaml").read_text().replace("restart: unless-stopped", "restart: 5", 1)
    broken.write_text(text.replace("    healthcheck:\n", "    healthcheck: nope\n    x:\n", 1))
    result = _compose_config(broken, tmp_path)
    assert result.returncode != 0


def test_compose_requires_the_admin_key(tmp_path):
    text = (ROOT / ".env.example").read_text()
    result = _compose_config(
        ROOT / "compose.yaml", tmp_path, text.replace("TRITON_ADMIN_KEY=\n", "X=\n")
    )
    assert result.returncode != 0 and "TRITON_ADMIN_KEY" in result.stderr


def test_every_compose_variable_is_documented():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used - documented == set()
    entry = (ROOT / "deploy" / "triton-entrypoint.sh").read_text()
    for var in re.findall(r"\$\{([A-Z_]+):-", entry):
        # TRITONKIT_*_FILE: the image writes the files; only tests point elsewhere
        exceptions = {"EXIT_TIMEOUT_SECS", "TRITONKIT_MIN_DRIVER_FILE", "TRITONKIT_ENGINE_FILE"}
        assert var in (ROOT / "compose.yaml").read_text() or var in exceptions


def test_tritonserver_accepts_the_entrypoint_flags():
    from tritonkit.serve.binary import find_distribution, server_environment

    dist = find_distribution()
    proc = subprocess.run(
        [str(dist.binary), "--help"], capture_output=True, text=True,
        env=server_environment(dist), timeout=60,
    )  # fmt: skip
    help_text = proc.stdout + proc.stderr
    entry = (ROOT / "deploy" / "triton-entrypoint.sh").read_text()
    # tritonserver's flags: those in the args array and what is appended to it (other
    # commands in the script, nvidia-smi's say, have flags of their own)
    passed = re.findall(r"^args=\((.*?)^\)", entry, re.M | re.S)
    passed += re.findall(r"^\s*args\+=\((.*)\)$", entry, re.M)
    flags = set(re.findall(r"--([a-z-]+)=", "\n".join(passed)))
    assert flags, "no flags found"
    # Flags of newer Tritons are passed only when `tritonserver --help` lists them.
    detected = set(re.findall(r"grep -q -- '--([a-z-]+)'", entry))
    assert detected == {"grpc-max-response-pool-size"}
    for flag in flags - detected:
        assert f"--{flag} " in help_text, f"tritonserver has no --{flag}"
    assert "--no-such-flag " not in help_text  # the check can fail


def test_the_image_gets_every_package_folder():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    # tritonkit/ itself, and the top-level folder each of its links points at
    folders = {p.split(".")[1] if "." in p else p for p in packages if p.count(".") <= 1}
    folders = {"tritonkit"} | {f for f in folders if (ROOT / "tritonkit" / f).is_symlink()}
    assert len(folders) >= 9
    copied = set(
        re.findall(r"^COPY (\S+) /opt/tritonkit/\1$", (ROOT / "Dockerfile").read_text(), re.M)
    )
    assert folders - copied == set(), "pip install in the image would miss these"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".tools" in ignored


def test_tritonkit_accepts_the_compose_commands():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    parser = build_parser()
    for name in ("model-sync", "gateway"):
        argv = [re.sub(r"\$\{[^}]*\}", "x", a) for a in services[name]["command"]]
        parser.parse_args(argv)  # exits (SystemExit) on an unknown flag
    with pytest.raises(SystemExit):
        parser.parse_args(["pull", "--no-such-flag"])


def test_cloud_init_is_valid_and_a_broken_one_is_not(tmp_path):
    good = ROOT / "deploy" / "azure" / "cloud-init.yaml"
    ok = subprocess.run(["cloud-init", "schema", "--config-file", str(good)],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(good.read_text().replace("package_update: true", "package_update: 7"))
    bad = subprocess.run(["cloud-init", "schema", "--config-file", str(broken)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0
    text = good.read_text()
    for needed in ("docker.io", "nvidia-container-toolkit", "nvidia-ctk runtime configure"):
        assert needed in text


def test_scripts_pass_shellcheck_and_a_broken_one_does_not(tmp_path):
    scripts = [*(ROOT / "deploy").rglob("*.sh"), *(ROOT / "scripts").glob("*.sh")]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert subprocess.run(["shellcheck", str(broken)], capture_output=True).returncode != 0


def test_create_vm_script_makes_what_the_vm_needs():
    # the storage part is shared with deploy/aks/create_cluster.sh
    text = (ROOT / "deploy" / "azure" / "create_vm.sh").read_text()
    text += (ROOT / "deploy" / "azure" / "storage.sh").read_text()
    assert 'source "${HERE}/storage.sh"' in text
    for needed in ("az vm create", "NvidiaGpuDriverLinux", "az storage account create",
                   "az storage container create", "az identity create",
                   '"Storage Blob Data Reader"', "--custom-data", "--assign-identity"):  # fmt: skip
        assert needed in text


# ---- tritonkit deploy ------------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".env").write_text("TRITON_ADMIN_KEY=x\n")
    (tmp_path / "gateway_api_keys.txt").write_text("k\n")
    return tmp_path


def test_deploy_over_a_docker_context(project):
    from tritonkit.deploy import plan_deploy

    plan = plan_deploy("azureuser@20.1.2.3", project)
    commands = [s.render() for s in plan.steps]
    assert commands[0] == "docker context inspect tritonkit-20.1.2.3"
    assert commands[1] == (
        "docker context create tritonkit-20.1.2.3 --docker host=ssh://azureuser@20.1.2.3"
    )
    assert commands[2].startswith("ssh ssh://azureuser@20.1.2.3 'umask 077")
    assert commands[2].endswith(str(project / "gateway_api_keys.txt"))
    assert plan.steps[2].sets_env == "GATEWAY_API_KEYS_FILE"
    assert commands[3].startswith(
        "TRITONKIT_ENGINE=onnxruntime docker --context tritonkit-20.1.2.3 compose"
    )
    assert commands[3].endswith("up -d --build")
    (project / "gateway_api_keys.txt").unlink()
    with pytest.raises(UsageError, match="no gateway API keys file"):
        plan_deploy("azureuser@20.1.2.3", project)


def test_deploy_shipping_the_image(project):
    from tritonkit.deploy import plan_deploy

    plan = plan_deploy("me@vm.example.org", project, context="gpu1", ship_image=True)
    commands = [s.render() for s in plan.steps]
    assert (
        f"docker save tritonkit-triton:{TRITON_TAG}-onnxruntime | gzip | ssh "
        "ssh://me@vm.example.org 'gunzip | docker load'" in commands
    )
    assert any(c.startswith("TRITONKIT_ENGINE=onnxruntime docker --context gpu1 compose")
               and c.endswith("up -d --no-build") for c in commands)  # fmt: skip


def test_deploy_picks_the_image_of_the_repositorys_engine(project):
    """--engine vllm (or .env's TRITONKIT_ENGINE) reaches every compose command, which
    builds from NGC's vLLM image and names the image after the engine."""
    from tritonkit.deploy import plan_deploy

    plan = plan_deploy("me@vm.example.org", project, context="gpu1", ship_image=True,
                       engine="vllm")  # fmt: skip
    commands = [s.render() for s in plan.steps]
    assert f"docker save tritonkit-triton:{TRITON_TAG}-vllm | gzip | ssh " in "\n".join(commands)
    compose = [s for s in plan.steps if "compose" in s.argv and s.argv[-1] != "ps"]
    assert len(compose) == 2 and all(s.env["TRITONKIT_ENGINE"] == "vllm" for s in compose)
    (project / ".env").write_text("TRITON_ADMIN_KEY=x\nTRITONKIT_ENGINE=vllm\n")
    plan = plan_deploy("me@vm.example.org", project)
    assert plan.steps[-2].render().startswith("TRITONKIT_ENGINE=vllm docker --context")
    assert (
        "TRITONKIT_ENGINE=onnxruntime "
        in plan_deploy("me@vm.example.org", project, engine="onnxruntime").steps[-2].render()
    )  # the flag wins over .env
    with pytest.raises(UsageError, match="engine 'tensorrt-llm': choose onnxruntime or vllm"):
        plan_deploy("me@vm.example.org", project, engine="tensorrt-llm")
    shutil.copy(ROOT / "compose.cpu.yaml", project / "compose.cpu.yaml")
    with pytest.raises(UsageError, match="needs a GPU VM"):
        plan_deploy("me@vm.example.org", project, engine="vllm", cpu=True)


def test_shipping_checks_the_vms_docker_disk_first(project, tmp_path):
    """The room check runs as planned, with ``docker`` and ``ssh`` stood in by scripts that
    report a 1 GiB image and the VM's free KiB (a VM with a full disk cannot exist here;
    the real transfer runs against a real sshd in test_stack.py)."""
    from tritonkit.deploy import plan_deploy

    plan = plan_deploy("me@vm.example.org", project, context="gpu1", ship_image=True)
    names = [s.description for s in plan.steps]
    room = plan.steps[
        names.index(f"is there room for tritonkit-triton:{TRITON_TAG}-onnxruntime on the VM?")
    ]
    assert names.index(room.description) + 1 == next(
        i for i, n in enumerate(names) if n.startswith("ship ")
    )
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "docker").write_text("#!/bin/sh\necho 1073741824\n")  # image inspect: 1 GiB
    (stubs / "ssh").write_text(  # the remote df | awk, or a failure there
        '#!/bin/sh\n[ "$FREE_KIB" = fail ] && exit 255\nprintf "%s\\n" "$FREE_KIB"\n'
    )
    for stub in stubs.iterdir():
        stub.chmod(0o755)

    def check(free_kib: int | str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "FREE_KIB": str(free_kib)}
        return subprocess.run(["bash", "-o", "pipefail", "-c", room.shell], env=env,
                              capture_output=True, text=True)  # fmt: skip

    assert check(8 * 1024 * 1024).returncode == 0  # 8 GiB free
    short = check(1024 * 1024)  # 1 GiB free: not enough to unpack and keep 1 GiB
    assert short.returncode == 1
    assert "the VM has 1024 MiB free for Docker" in short.stderr
    assert "needs about 2048 MiB" in short.stderr and "docker system prune" in short.stderr
    unreachable = check("fail")
    assert unreachable.returncode == 1
    assert "cannot read the VM's free Docker disk (try: ssh me@vm.example.org" in unreachable.stderr
    marker = tmp_path / "ran"
    hostile = check(f"a[$(touch {marker})]")  # what the VM prints never reaches arithmetic
    assert hostile.returncode == 1 and "unreadable sizes" in hostile.stderr
    assert not marker.exists()
    (project / "compose.cpu.yaml").write_text("services: {}\n")
    (project / ".env").write_text("TRITONKIT_CPU_IMAGE=x$(id)\n")
    with pytest.raises(UsageError, match="not an image name"):
        plan_deploy("me@vm.example.org", project, cpu=True, ship_image=True)


def test_deploy_refuses_bad_input(project, capsys):
    from tritonkit.deploy import plan_deploy

    with pytest.raises(UsageError, match="USER@HOST"):
        plan_deploy("just-a-host", project)
    (project / ".env").unlink()
    with pytest.raises(UsageError, match=r"copy \.env\.example"):
        plan_deploy("me@vm", project)
    (project / ".env").write_text("TRITON_ADMIN_KEY=x\n")
    assert run(["deploy", "--host", "me@vm", "--project-dir", str(project), "--dry-run"]) == 0
    assert "docker context create tritonkit-vm" in capsys.readouterr().out


# ---- GPU-only paths: clear refusals here ---------------------------------------------


def test_tensorrt_export_without_a_gpu_is_a_one_line_error(tmp_path):
    from tritonkit.export.tensorrt import require_tensorrt

    with pytest.raises(ExportError, match="no CUDA GPU"):
        require_tensorrt()
    proc = subprocess.run(
        [str(Path(os.sys.executable)), "-m", "tritonkit", "export", "tensorrt", "--export",
         str(tmp_path), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "tritonkit: error:" in proc.stderr


def test_gpu_target_configs(tmp_path, tiny_model_folder):
    # Config writing only: a placeholder file stands in for an engine, which needs a GPU.
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from tritonkit.export import main_export
    from tritonkit.model_repository import (
        OnnxRuntime,
        RepositorySpec,
        TensorRTPlan,
        build_repository,
        engine_spec,
    )

    # concat: a fused graph exported on the CPU is refused for a GPU (test_gpu_path.py)
    export = main_export(str(tiny_model_folder("llama")), tmp_path / "e", graph="concat").output
    gpu = build_repository(
        export,
        tmp_path / "gpu",
        OnnxRuntime(tensorrt_accelerator=True),
        RepositorySpec(target="gpu"),
    )
    dec = text_format.Parse(
        (gpu.path / "llm_decoder" / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    assert dec.platform == "onnxruntime_onnx"
    assert dec.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert dec.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    entry = text_format.Parse((gpu.path / "llm" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert entry.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert entry.parameters["execution_provider"].string_value == "tensorrt"
    assert not (gpu.path / "llm_decoder" / "1" / "model.py").exists()

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "model.plan").write_bytes(b"placeholder")
    trt = build_repository(
        export, tmp_path / "trt", TensorRTPlan(plan=engine), RepositorySpec(target="gpu")
    )
    dec = text_format.Parse(
        (trt.path / "llm_decoder" / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    assert dec.platform == "tensorrt_plan" and dec.default_model_filename == "model.plan"
    assert (trt.path / "llm_decoder" / "1" / "model.onnx").is_file()  # the entry model's graph
    ref = json.loads((trt.path / "llm" / "1" / "decoder.json").read_text())
    assert ref == {"model": "llm_decoder", "version": 1}
    with pytest.raises(UsageError, match=r"--plan DIR holding model\.plan"):
        build_repository(
            export, tmp_path / "x", TensorRTPlan(plan=tmp_path), RepositorySpec(target="gpu")
        )
    with pytest.raises(UsageError, match="--engine tensorrt needs --plan"):
        engine_spec("tensorrt", tensorrt_accelerator=True)  # what the CLI builds from flags
    with pytest.raises(UsageError, match="--engine tensorrt needs --target gpu"):
        build_repository(export, tmp_path / "x", TensorRTPlan(plan=engine))
    assert not (tmp_path / "x").exists()


def test_a_tag_that_is_not_a_tag_is_refused_before_any_shell_sees_it(project, tmp_path):
    from tritonkit.deploy import plan_deploy

    marker = tmp_path / "ran"
    for tag in (f"x$(touch {marker})", "a b", "x;ls", "", "-rm"):
        with pytest.raises(UsageError, match="is not an image tag"):
            plan_deploy("me@vm.example.org", project, ship_image=True, tag=tag)
    assert not marker.exists()
    assert plan_deploy("me@vm.example.org", project, ship_image=True, tag="26.08").steps


def test_the_keys_folder_on_the_vm_is_made_private_even_when_it_existed(project, tmp_path):
    """The copy step's shell runs for real, with ``ssh`` stood in by a script that runs
    the remote command in a stand-in home folder (no VM here; test_stack.py runs it over a
    real sshd)."""
    from tritonkit.deploy import plan_deploy

    home = tmp_path / "home"
    (home / ".tritonkit").mkdir(parents=True)
    (home / ".tritonkit").chmod(0o755)  # left open by an earlier hand-made setup
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "ssh").write_text(f'#!/bin/sh\ncd {home} && eval "$2"\n')
    (stubs / "ssh").chmod(0o755)
    step = plan_deploy("me@vm.example.org", project).steps[2]
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", step.shell], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (home / ".tritonkit").stat().st_mode & 0o777 == 0o700
    keys = home / ".tritonkit" / "gateway_api_keys.txt"
    assert keys.read_text() == "k\n" and keys.stat().st_mode & 0o777 == 0o644
    assert proc.stdout.strip().endswith(".tritonkit/gateway_api_keys.txt")
