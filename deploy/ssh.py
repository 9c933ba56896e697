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

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import DeployError, UsageError

HOST_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.:\[\]-]+$")
IMAGE = "tritonkit-triton:{tag}"


@dataclass(frozen=True)
class Step:
    """One command: an argv list, or a shell pipeline string (``shell``)."""

    description: str
    argv: tuple[str, ...] = ()
    shell: str = ""
    check_only: bool = False  # a probe: its failure changes the plan, it is not an error

    def render(self) -> str:
        return self.shell or shlex.join(self.argv)


@dataclass
class DeployPlan:
    """The commands of one deployment, in order."""

    host: str
    context: str
    steps: list[Step] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(f"# {s.description}\n{s.render()}" for s in self.steps)


def plan_deploy(
    host: str,
    project_dir: str | Path = ".",
    context: str | None = None,
    ship_image: bool = False,
    tag: str = "24.10",
    profiles: tuple[str, ...] = (),
) -> DeployPlan:
    """The commands that deploy ``project_dir``'s compose stack to ``host``.

    Raises:
        UsageError: a malformed host, or a project folder without compose.yaml or .env.
    """
    if not HOST_RE.match(host):
        raise UsageError(f"host {host!r} is not USER@HOST (for example azureuser@20.1.2.3)")
    project = Path(project_dir).expanduser().resolve()
    if not (project / "compose.yaml").is_file():
        raise UsageError(f"{project} has no compose.yaml; run from the tritonkit checkout")
    if not (project / ".env").is_file():
        raise UsageError(f"{project} has no .env; copy .env.example to .env and fill it in")
    name = context or "tritonkit-" + re.sub(r"[^A-Za-z0-9_.-]", "-", host.split("@", 1)[1])
    compose = [
        "docker",
        "--context",
        name,
        "compose",
        "--project-directory",
        str(project),
        "--env-file",
        str(project / ".env"),
    ]
    for profile in profiles:
        compose += ["--profile", profile]
    plan = DeployPlan(host, name)
    plan.steps.append(
        Step(
            "is there a docker context for the VM?",
            ("docker", "context", "inspect", name),
            check_only=True,
        )
    )
    plan.steps.append(
        Step(
            f"create it: docker over SSH to {host}",
            ("docker", "context", "create", name, "--docker", f"host=ssh://{host}"),
        )
    )
    if ship_image:
        image = IMAGE.format(tag=tag)
        plan.steps.append(
            Step(
                "build the image here",
                ("docker", "compose", "--project-directory", str(project), "build", "triton"),
            )
        )
        plan.steps.append(
            Step(
                f"ship {image} to the VM",
                shell=f"docker save {shlex.quote(image)} | gzip | "
                f"ssh {shlex.quote(host)} 'gunzip | docker load'",
            )
        )
        plan.steps.append(Step("start the stack on the VM", (*compose, "up", "-d", "--no-build")))
    else:
        plan.steps.append(
            Step("build and start the stack on the VM", (*compose, "up", "-d", "--build"))
        )
    plan.steps.append(Step("show the services", (*compose, "ps")))
    return plan


def run_plan(
    plan: DeployPlan,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> None:
    """Run ``plan``; an existing context skips its creation.

    Raises:
        DeployError: docker is missing, or a command failed (its own message quoted).
    """
    if shutil.which("docker") is None:
        raise DeployError(
            "the docker CLI is not installed here; install Docker (the CLI is enough)"
        )
    skip_create = False
    for step in plan.steps:
        if skip_create and step.argv[:3] == ("docker", "context", "create"):
            continue
        print(f"==> {step.description}\n    {step.render()}", flush=True)
        if step.shell:
            result = run(["bash", "-o", "pipefail", "-c", step.shell], capture_output=True)
        else:
            result = run(list(step.argv), capture_output=True)
        if step.check_only:
            skip_create = result.returncode == 0
            continue
        if result.returncode != 0:
            err = (result.stderr or b"").decode(errors="replace").strip().splitlines()
            raise DeployError(f"`{step.render()}` failed: {err[-1] if err else 'no output'}")
