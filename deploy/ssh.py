"""Plan and run a deployment of the compose stack to ``USER@VM`` over SSH.

Two ways, as users do it:

* context (default): a Docker context over SSH, ``docker context create NAME --docker
  host=ssh://USER@VM``; compose then builds and runs on the VM's engine.
* ``ship_image``: build the image here, stream it as ``docker save | gzip | ssh VM
  'gunzip | docker load'``, then start the stack there without building.

Every command is planned first (``plan_deploy``), so ``--dry-run`` shows exactly what
would run and the tests check it without a Docker engine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import DeployError, UsageError
from tritonkit.versions import IMAGE_ENGINES, TRITON_TAG

HOST_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.:\[\]-]+$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")  # a Docker image reference
IMAGE = "tritonkit-triton:{tag}-{engine}"  # compose.yaml's image name
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's tag grammar: no shell
CPU_IMAGE = "tritonkit-cpu:latest"


@dataclass(frozen=True)
class Step:
    """One command: an argv list, or a shell pipeline string (``shell``)."""

    description: str
    argv: tuple[str, ...] = ()
    shell: str = ""
    check_only: bool = False  # a probe: its failure changes the plan, it is not an error
    sets_env: str = ""  # its output's last line becomes this variable for later steps
    env: dict[str, str] = field(default_factory=dict)  # added to its own environment

    def render(self) -> str:
        command = self.shell or shlex.join(self.argv)
        assigned = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{assigned} {command}" if assigned else command


@dataclass
class DeployPlan:
    """The commands of one deployment, in order."""

    host: str
    context: str
    steps: list[Step] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(f"# {s.description}\n{s.render()}" for s in self.steps)


def _env_value(env_file: Path, key: str) -> str | None:
    for line in env_file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def plan_deploy(
    host: str,
    project_dir: str | Path = ".",
    context: str | None = None,
    ship_image: bool = False,
    tag: str = TRITON_TAG,
    profiles: tuple[str, ...] = (),
    cpu: bool = False,
    down: bool = False,
    engine: str | None = None,
) -> DeployPlan:
    """The commands that deploy ``project_dir``'s compose stack to ``host``
    (``USER@HOST`` or ``USER@HOST:PORT``).

    ``engine`` picks the Triton image (``onnxruntime``: tritonkit's engine on NGC's -py3
    image; ``vllm``: NGC's -vllm-python-py3 image), default .env's ``TRITONKIT_ENGINE``,
    else onnxruntime; it must be what the published repository was built with (the
    image's entrypoint refuses the other). ``cpu`` runs the CPU stack (compose.cpu.yaml,
    the image scripts/build_cpu_image.sh builds) on a VM without a GPU; ``down`` stops
    the stack instead (volumes kept). The
    gateway's API keys file is copied to the VM (``~/.tritonkit``, a 0700 folder) before the
    stack starts: compose mounts secrets from the engine's filesystem, not this one.

    Raises:
        UsageError: a malformed host or image name, an unknown engine (or vllm on the
            CPU stack), or a project folder without compose.yaml, .env or (to start) the
            API keys file.
    """
    if not HOST_RE.match(host):
        raise UsageError(f"host {host!r} is not USER@HOST (for example azureuser@20.1.2.3)")
    if not TAG_RE.fullmatch(tag):
        raise UsageError(
            f"--tag {tag!r} is not an image tag (letters, digits, '_', '.', '-'; at most 128)"
        )
    project = _checked_project(project_dir, cpu)
    engine = engine or _env_value(project / ".env", "TRITONKIT_ENGINE") or IMAGE_ENGINES[0]
    if engine not in IMAGE_ENGINES:
        raise UsageError(f"engine {engine!r}: choose {' or '.join(IMAGE_ENGINES)}")
    if cpu and engine != IMAGE_ENGINES[0]:
        raise UsageError(
            f"the CPU stack serves tritonkit's onnxruntime engine only; --engine {engine} "
            "needs a GPU VM (drop --cpu)"
        )
    name = context or "tritonkit-" + re.sub(r"[^A-Za-z0-9_.-]", "-", host.split("@", 1)[1])
    if cpu:
        profiles = ("cpu", *profiles)
    compose = _compose_argv(name, project, cpu, profiles)
    plan = DeployPlan(host, name, _context_steps(host, name))
    if down:
        plan.steps.append(Step("stop the stack on the VM", (*compose, "down", "-t", "10")))
        return plan
    plan.steps.append(_copy_keys_step(host, project))
    chosen = {"TRITONKIT_ENGINE": engine}  # compose.yaml's image and its ENGINE build arg
    plan.steps += [
        dataclasses.replace(step, env={**chosen, **step.env}) if "compose" in step.argv else step
        for step in _start_steps(
            host, name, project, compose, ship_image, tag, engine, cpu, profiles
        )
    ]
    plan.steps.append(Step("show the services", (*compose, "ps")))
    return plan


def _checked_project(project_dir: str | Path, cpu: bool) -> Path:
    """The project folder, resolved, once it holds what a deployment reads."""
    project = Path(project_dir).expanduser().resolve()
    needed = ["compose.yaml", ".env"] + (["compose.cpu.yaml"] if cpu else [])
    for file in needed:
        if not (project / file).is_file():
            hint = (
                "copy .env.example to .env and fill it in"
                if file == ".env"
                else "run from the tritonkit checkout"
            )
            raise UsageError(f"{project} has no {file}; {hint}")
    return project


def _compose_argv(
    context: str, project: Path, cpu: bool, profiles: tuple[str, ...]
) -> tuple[str, ...]:
    """``docker compose`` on the VM's context, with the project's files and profiles."""
    argv = ["docker", "--context", context, "compose", "--project-directory", str(project),
            "--env-file", str(project / ".env"), "-f", str(project / "compose.yaml")]  # fmt: skip
    if cpu:
        argv += ["-f", str(project / "compose.cpu.yaml")]
    for profile in profiles:
        argv += ["--profile", profile]
    return tuple(argv)


def _context_steps(host: str, context: str) -> list[Step]:
    """Probe for the VM's Docker context, and create it (skipped when the probe passes)."""
    return [
        Step(
            "is there a docker context for the VM?",
            ("docker", "context", "inspect", context),
            check_only=True,
        ),
        Step(
            f"create it: docker over SSH to {host}",
            ("docker", "context", "create", context, "--docker", f"host=ssh://{host}"),
        ),
    ]


def _copy_keys_step(host: str, project: Path) -> Step:
    """Copy the gateway's API keys file into the VM's ``~/.tritonkit``.

    Raises:
        UsageError: the keys file named by .env (or the default) does not exist.
    """
    keys = _env_value(project / ".env", "GATEWAY_API_KEYS_FILE") or "./gateway_api_keys.txt"
    keys_path = (project / keys).resolve()
    if not keys_path.is_file():
        raise UsageError(
            f"no gateway API keys file at {keys_path}: make one (openssl rand -hex 24 > "
            f"{keys_path}) or set GATEWAY_API_KEYS_FILE in .env"
        )
    return Step(
        "copy the gateway's API keys to the VM (~/.tritonkit, a folder only you can open)",
        # The folder keeps other users out (made private even when it existed before);
        # the file itself must be readable by the gateway's non-root user, which sees it
        # through a bind mount, where the folder's mode does not apply.
        shell=f"ssh ssh://{host} 'umask 077 && mkdir -p .tritonkit && chmod 0700 .tritonkit && "
        "umask 022 && cat > "
        ".tritonkit/gateway_api_keys.txt && chmod 0644 .tritonkit/gateway_api_keys.txt && "
        f'echo "$PWD/.tritonkit/gateway_api_keys.txt"\' < {shlex.quote(str(keys_path))}',
        sets_env="GATEWAY_API_KEYS_FILE",
    )


def _start_steps(
    host: str,
    context: str,
    project: Path,
    compose: tuple[str, ...],
    ship_image: bool,
    tag: str,
    engine: str,
    cpu: bool,
    profiles: tuple[str, ...],
) -> list[Step]:
    """Get the image onto the VM (built there, or built here and shipped) and start."""
    cpu_image = _env_value(project / ".env", "TRITONKIT_CPU_IMAGE") or CPU_IMAGE
    if not IMAGE_RE.match(cpu_image):
        raise UsageError(f"TRITONKIT_CPU_IMAGE in .env is not an image name: {cpu_image!r}")
    build_script = str(project / "scripts" / "build_cpu_image.sh")
    services: tuple[str, ...] = ()
    if cpu:
        services = ("model-sync", "triton-cpu", "gateway")
        if "local" in profiles:
            services = ("azurite", *services)
    start = Step("start the stack on the VM", (*compose, "up", "-d", "--no-build", *services))
    if ship_image:
        image = cpu_image if cpu else IMAGE.format(tag=tag, engine=engine)
        build = (
            Step("build the CPU image here", ("bash", build_script, image))
            if cpu
            else Step(
                "build the image here",
                ("docker", "compose", "--project-directory", str(project), "build", "triton"),
            )
        )
        ship = Step(
            f"ship {image} to the VM",
            shell=f"docker save {shlex.quote(image)} | gzip | "
            f"ssh ssh://{host} 'gunzip | docker load'",
        )
        return [build, _room_step(host, image), ship, start]
    if cpu:
        build_there = Step(
            "build the CPU image on the VM (its engine, over SSH)",
            ("bash", build_script, cpu_image),
            env={"DOCKER_CONTEXT": context},
        )
        return [build_there, start]
    return [Step("build and start the stack on the VM", (*compose, "up", "-d", "--build"))]


def _room_step(host: str, image: str) -> Step:
    """Fail early, with what to do, when the VM's Docker disk cannot take ``image``.

    ``docker load`` unpacks the whole image once before it keeps the layers it lacks, so
    it needs about the image's size free again; a full disk would otherwise fail minutes
    into the transfer with "no space left on device". Both sizes are checked to be plain
    numbers before any arithmetic: what the VM prints is not trusted.
    """
    root = "root=$(docker info -f '{{.DockerRootDir}}')"
    remote = f"{root} && df -Pk \"$root\" | awk 'NR==2 {{print $4}}'"
    q = shlex.quote(image)
    return Step(
        f"is there room for {image} on the VM?",
        shell=f"need=$(docker image inspect -f '{{{{.Size}}}}' {q}) || "
        f'{{ echo "no image {image} here to ship" >&2; exit 1; }}; '
        f"free=$(ssh ssh://{host} {shlex.quote(remote)}) || "
        f'{{ echo "cannot read the VM\'s free Docker disk (try: ssh {host} docker info)" >&2; '
        "exit 1; }; "
        '[[ $need =~ ^[0-9]+$ && $free =~ ^[0-9]+$ ]] || { echo "unreadable sizes: image '
        "'$need' bytes, VM free '$free' KiB\" >&2; exit 1; }; "
        "need=$((need / 1048576)); free=$((free / 1024)); "
        f'if (( free < need * 2 )); then echo "the VM has $free MiB free for Docker; '
        f"shipping {image} needs about $((need * 2)) MiB (docker load unpacks it once): "
        f'free space there (docker system prune) or deploy without --ship-image" >&2; exit 1; fi',
    )


def run_plan(
    plan: DeployPlan,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> None:
    """Run ``plan``; an existing context skips its creation, and a step's ``sets_env``
    passes its output's last line to the steps after it.

    Raises:
        DeployError: docker is missing, or a command failed (its own message quoted).
    """
    if shutil.which("docker") is None:
        raise DeployError(
            "the docker CLI is not installed here; install Docker (the CLI is enough)"
        )
    skip_create = False
    env = dict(os.environ)  # local commands (build, save) use this machine's engine
    for step in plan.steps:
        if skip_create and step.argv[:3] == ("docker", "context", "create"):
            continue
        print(f"==> {step.description}\n    {step.render()}", flush=True)
        step_env = {**env, **step.env}
        if "DOCKER_CONTEXT" in step.env:
            step_env.pop("DOCKER_HOST", None)  # it would win over the context
        cmd = ["bash", "-o", "pipefail", "-c", step.shell] if step.shell else list(step.argv)
        result = run(cmd, capture_output=True, env=step_env)
        if step.check_only:
            skip_create = result.returncode == 0
            continue
        if result.returncode != 0:
            err = (result.stderr or b"").decode(errors="replace").strip().splitlines()
            raise DeployError(f"`{step.render()}` failed: {err[-1] if err else 'no output'}")
        if step.sets_env:
            lines = (result.stdout or b"").decode(errors="replace").strip().splitlines()
            if not lines:
                raise DeployError(f"`{step.render()}` printed nothing")
            env[step.sets_env] = lines[-1]
