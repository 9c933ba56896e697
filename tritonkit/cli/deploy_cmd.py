"""``tritonkit deploy``: the compose stack to a GPU VM over SSH, or manifests for KServe on
AKS (``deploy kserve``) and Azure ML online endpoints (``deploy azureml``)."""

from __future__ import annotations

import argparse
from typing import Any

from tritonkit.versions import IMAGE_ENGINES, TRITON_TAG

HELP = """\
Deploy the compose stack (Triton on the GPU, model-sync from Blob, the gateway) to a
VM over SSH, in one of two ways:
  default       a Docker context over SSH (docker context create NAME --docker
                host=ssh://USER@VM); compose builds and runs on the VM
  --ship-image  build the image here and stream it to the VM
                (docker save | gzip | ssh VM 'gunzip | docker load'), then start it

Needs .env next to compose.yaml (copy .env.example), the gateway's API keys file
(copied into the VM's ~/.tritonkit, a folder only you can open: compose mounts
secrets from the VM's disk) and SSH access to the VM (USER@HOST or USER@HOST:PORT).
--engine vllm serves a repository built with `repo build --engine vllm` from NGC's
vLLM image (the image's entrypoint refuses a repository of the other engine).
--cpu runs the CPU stack (compose.cpu.yaml) on a VM without a GPU; --down stops it.
deploy/azure/create_vm.sh creates such a VM from an empty subscription.

examples:
  tritonkit deploy --host azureuser@20.1.2.3 --dry-run
  tritonkit deploy --host azureuser@20.1.2.3
  tritonkit deploy --host azureuser@20.1.2.3 --ship-image --context gpu1
  tritonkit deploy --host azureuser@20.1.2.3 --engine vllm
  tritonkit deploy --host azureuser@20.1.2.3 --cpu --ship-image
  tritonkit deploy --host azureuser@20.1.2.3 --down

Beyond one VM: `tritonkit deploy kserve --help` (KServe on AKS: GPU replicas, KEDA,
the gateway) and `tritonkit deploy azureml --help` (an Azure ML managed online endpoint).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "deploy",
        help="run the compose stack on a GPU VM over SSH",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", metavar="USER@VM", help="SSH destination (required for the VM)")
    p.add_argument("--context", help="docker context name (default tritonkit-<vm>)")
    p.add_argument("--ship-image", action="store_true", help="build here, ship the image")
    p.add_argument("--project-dir", default=".", help="folder with compose.yaml and .env")
    p.add_argument("--tag", default=TRITON_TAG, help=f"Triton image tag (default {TRITON_TAG})")
    p.add_argument("--profile", action="append", default=[], help="extra compose profile")
    p.add_argument(
        "--engine", choices=IMAGE_ENGINES,
        help="the engine the published repository was built with, which picks the image: "
        "onnxruntime (NGC's -py3 image plus tritonkit's packages) or vllm (NGC's "
        "-vllm-python-py3 image); default .env's TRITONKIT_ENGINE, else onnxruntime",
    )  # fmt: skip
    p.add_argument(
        "--cpu",
        action="store_true",
        help="the CPU stack (compose.cpu.yaml; image from scripts/build_cpu_image.sh) on a VM "
        "without a GPU",
    )
    p.add_argument("--down", action="store_true", help="stop the stack on the VM (volumes kept)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.set_defaults(handler=_run)
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=False)
    from .deploy_manifests_cmd import add_parsers

    add_parsers(targets)


def _run(args: argparse.Namespace) -> int:
    from tritonkit.deploy import plan_deploy, run_plan
    from tritonkit.errors import UsageError

    if not args.host:
        raise UsageError(
            "tritonkit deploy needs --host USER@VM (the compose stack over SSH), or a target: "
            "tritonkit deploy kserve ... | tritonkit deploy azureml ... (see --help)"
        )

    plan = plan_deploy(
        args.host,
        args.project_dir,
        context=args.context,
        ship_image=args.ship_image,
        tag=args.tag,
        profiles=tuple(args.profile),
        cpu=args.cpu,
        down=args.down,
        engine=args.engine,
    )
    if args.dry_run:
        print(plan.render())
        return 0
    run_plan(plan)
    done = "stopped on" if args.down else "deployed to"
    print(f"\n{done} {args.host} (docker context {plan.context})")
    return 0
