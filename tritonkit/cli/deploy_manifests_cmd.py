"""``tritonkit deploy kserve`` and ``tritonkit deploy azureml``: manifests for a release,
validated offline before anything is written or printed (forwards to tritonkit.deploy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tritonkit.versions import IMAGE_ENGINES

KSERVE_HELP = """\
Write the Kubernetes manifests that serve Blob release R on KServe (RawDeployment) in
AKS: a ServingRuntime and an InferenceService per release (tritonkit's Triton image, GPU
node pool, KEDA scaling on the entry model's waiting requests), a workload-identity
ServiceAccount, a headless Service listing every Triton replica, and the gateway
(Deployment, Service, HPA) balancing over them. Every object is validated first
(KServe CRDs, strict Kubernetes schemas); nothing is written if one fails.

Secrets are referenced, never written: the command prints the kubectl commands that
create them. deploy/aks/create_cluster.sh makes a cluster these manifests fit.

A new release is a new InferenceService (KServe's canary split needs Serverless mode):
--previous-release P keeps P in the gateway's pool while R starts (traffic splits by
ready replicas); regenerate without it to send everything to R, then delete P.

examples:
  tritonkit deploy kserve --release 3 --container models \\
      --account-url https://acct.blob.core.windows.net \\
      --image myacr.azurecr.io/tritonkit-triton:26.08-onnxruntime \\
      --client-id 00000000-0000-0000-0000-000000000000 --out out/k8s
  tritonkit deploy kserve --release 3 ... --dry-run | less
  tritonkit deploy kserve --release 4 --previous-release 3 ... --out out/k8s-r4 --force
  kubectl apply -k out/k8s
"""

AZUREML_HELP = """\
Write Azure ML YAML that serves Blob release R on a managed online endpoint: the release
folder as a model version, the endpoint (key or aml_token auth) and a blue/green
deployment of tritonkit's Triton image as a custom container (routes to Triton's
/v2/health/live, /v2/health/ready and /v2/models/ENTRY/generate). Each document is loaded
with azure-ai-ml and checked for what Azure refuses beyond it (request_timeout_ms over
180000, endpoint and deployment names); nothing is written if one fails.

Azure ML fronts HTTP only: no gRPC, so no token streaming, and requests end after
3 minutes at most. --model-type triton_model is refused (its Triton cannot import
onnxruntime or tokenizers).

examples:
  tritonkit deploy azureml --release 3 --container models \\
      --account-url https://acct.blob.core.windows.net \\
      --image myws.azurecr.io/tritonkit-triton:26.08-onnxruntime --slot blue --out out/aml
  tritonkit deploy azureml --release 4 --previous-release 3 --slot green ... --out out/aml-r4
  tritonkit deploy azureml --release 3 ... --dry-run
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", type=int, required=True, metavar="R", help="Blob release number")
    p.add_argument(
        "--release-sha256",
        metavar="HEX",
        help="SHA-256 of the release's release.json (default: read from Blob)",
    )
    p.add_argument("--container", required=True, help="Blob container of the releases")
    p.add_argument("--prefix", default="", help="folder above releases/ in the container")
    p.add_argument(
        "--account-url", required=True, metavar="URL", help="https://ACCOUNT.blob.core.windows.net"
    )
    p.add_argument("--image", required=True, help="tritonkit's Triton image in your registry")
    p.add_argument(
        "--engine", choices=IMAGE_ENGINES,
        help="the engine the release was built with (`repo build --engine`): onnxruntime "
        "(the image built with ENGINE=onnxruntime) or vllm (ENGINE=vllm, on NGC's vLLM image; "
        "no decoder model); default: read from --repository, else onnxruntime",
    )  # fmt: skip
    p.add_argument(
        "--previous-release", type=int, metavar="P", help="keep P serving during R's start"
    )
    p.add_argument(
        "--repository",
        metavar="DIR",
        help="local copy of the release's model repository: models and entry models from it "
        "(default: the demo's llm, llm_decoder, llm_sync)",
    )
    pin = p.add_argument_group(
        "the release's pin",
        "The manifests pin release R's SHA-256 (its release.json), so a pod verifies what it "
        "downloaded before Triton starts. Without --release-sha256 it is read from Blob "
        "with these credentials; --allow-unpinned skips the pin (not for production).",
    )
    pin.add_argument(
        "--connection-string",
        metavar="S",
        help="read release.json with a connection string "
        "(default: $AZURE_STORAGE_CONNECTION_STRING)",
    )
    pin.add_argument(
        "--credential",
        default="default",
        choices=["default", "key", "sas"],
        help="read release.json from --account-url with: default (managed identity, az "
        "login), key ($AZURE_STORAGE_KEY) or sas ($AZURE_STORAGE_SAS_TOKEN)",
    )
    pin.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="write manifests that serve R without checking its SHA-256",
    )
    p.add_argument("--out", metavar="DIR", help="folder to write (replaced as a whole)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--dry-run", action="store_true", help="print the YAML, write nothing")


def add_parsers(targets: Any) -> None:
    k = targets.add_parser(
        "kserve",
        help="manifests for KServe on AKS",
        description=KSERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(k)
    k.add_argument("--namespace", default="tritonkit", help="Kubernetes namespace")
    k.add_argument("--name", default="tritonkit", help="base name of the objects")
    k.add_argument("--min-replicas", type=int, default=1, help="Triton replicas at least")
    k.add_argument("--max-replicas", type=int, default=4, help="Triton replicas at most")
    k.add_argument("--gpu-type", default="a100", help="t4, a10, a100, h100 or an AKS VM size")
    k.add_argument("--gpus", type=int, default=1, help="GPUs per Triton replica")
    k.add_argument("--client-id", help="client id of the managed identity that reads Blob")
    k.add_argument("--waiting-per-replica", type=int, default=4, help="KEDA target (average)")
    k.add_argument("--prometheus-url", help="Prometheus KEDA queries")
    k.add_argument("--gateway-image", help="gateway image (default --image)")
    k.add_argument("--gateway-replicas", type=int, default=2, help="gateway replicas at least")
    k.add_argument("--gateway-max-replicas", type=int, default=8, help="gateway replicas at most")
    k.set_defaults(handler=_kserve)

    a = targets.add_parser(
        "azureml",
        help="YAML for an Azure ML managed online endpoint",
        description=AZUREML_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(a)
    a.add_argument("--endpoint", default="tritonkit-llm", help="endpoint name (3-32)")
    a.add_argument("--slot", default="blue", choices=["blue", "green"], help="deployment for R")
    a.add_argument("--model-name", default="tritonkit-repository", help="Azure ML model name")
    a.add_argument("--model-type", default="custom_model", help="custom_model (triton_model: no)")
    a.add_argument("--instance-type", default="Standard_NC24ads_A100_v4", help="GPU VM size")
    a.add_argument("--instance-count", type=int, default=1, help="instances")
    a.add_argument("--auth-mode", default="key", choices=["key", "aml_token"], help="auth")
    a.add_argument("--request-timeout-ms", type=int, default=180000, help="at most 180000")
    a.set_defaults(handler=_azureml)


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both targets take: the release, the image, the models."""
    from tritonkit.deploy.release_ref import (
        DEMO_ENTRY_MODELS,
        DEMO_MODELS_BY_ENGINE,
        ReleaseRef,
        models_in_repository,
        repository_engine,
    )
    from tritonkit.errors import ManifestError

    engine = args.engine or "onnxruntime"
    if args.repository:
        models, entry = models_in_repository(Path(args.repository))
        built_for = repository_engine(Path(args.repository), entry)
        if args.engine and args.engine != built_for:
            raise ManifestError(
                f"--engine {args.engine}, and {args.repository} was built with --engine "
                f"{built_for}: drop --engine, or give the release of that engine"
            )
        engine = built_for
    else:
        models, entry = DEMO_MODELS_BY_ENGINE[engine], DEMO_ENTRY_MODELS
    ref = ReleaseRef(
        release=args.release,
        container=args.container,
        account_url=args.account_url,
        prefix=args.prefix,
        sha256=args.release_sha256,
    ).check()
    if ref.sha256 is None:
        ref = _pinned(ref, args)
    return {
        "release": ref,
        "image": args.image,
        "previous_release": args.previous_release,
        "models": models,
        "entry_models": entry,
        "engine": engine,
    }


def _pinned(ref: Any, args: argparse.Namespace) -> Any:
    """``ref`` with the SHA-256 of its release.json, read from Blob (or unpinned, when
    ``--allow-unpinned`` says so, with a warning).

    Raises:
        ManifestError: the release has no release.json there (not created, or another
            prefix), or its release.json cannot be used.
        UsageError, BlobError: no credentials, or what the account answered.
    """
    import dataclasses
    import os

    from tritonkit.errors import ManifestError

    if args.allow_unpinned:
        print(
            f"warning: release {ref.release} is not pinned (--allow-unpinned): pods will serve "
            "whatever that folder holds when they start",
            file=sys.stderr,
        )
        return ref
    from tritonkit.blob import connect
    from tritonkit.blob.release import list_releases

    store = connect(
        ref.container,
        ref.prefix,
        connection_string=args.connection_string
        or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        account_url=ref.account_url,
        credential=args.credential,
    )
    row = next((r for r in list_releases(store) if r.number == ref.release), None)
    if row is None or not row.complete or row.problem:
        why = row.problem if row is not None and row.problem else "it has no release.json"
        raise ManifestError(
            f"release {ref.release} under {ref.container}/{ref.prefix or ''} cannot be pinned: "
            f"{why}; create it (tritonkit release create), check --prefix, or give "
            "--release-sha256"
        )
    print(f"pinned release {ref.release}: release.json SHA-256 {row.sha256}", file=sys.stderr)
    return dataclasses.replace(ref, sha256=row.sha256)


def _emit(files: dict[str, str], args: argparse.Namespace, steps: str) -> int:
    from tritonkit.deploy.yamlio import write_folder
    from tritonkit.errors import UsageError

    if args.dry_run:
        print("---\n".join(files.values()), end="")
        print("# next:\n" + "\n".join(f"#   {line}" for line in steps.splitlines()),
              file=sys.stderr)  # fmt: skip
        return 0
    if not args.out:
        raise UsageError("give --out DIR to write the files, or --dry-run to print them")
    out = write_folder(files, Path(args.out), force=args.force)
    print(f"wrote {len(files)} files to {out} (validated offline)\nnext:")
    print("\n".join(f"  {line}" for line in steps.splitlines()))
    return 0


def _kserve(args: argparse.Namespace) -> int:
    from tritonkit.deploy.kserve import (
        DEFAULT_PROMETHEUS,
        KServeOptions,
        file_name,
        kserve_manifests,
        kustomization,
        next_steps,
    )
    from tritonkit.deploy.validate import validate_manifests
    from tritonkit.deploy.yamlio import dump

    opts = KServeOptions(
        **_common_options(args),
        namespace=args.namespace,
        name=args.name,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        gpu_type=args.gpu_type,
        gpus_per_replica=args.gpus,
        client_id=args.client_id,
        waiting_per_replica=args.waiting_per_replica,
        prometheus_url=args.prometheus_url or DEFAULT_PROMETHEUS,
        gateway_image=args.gateway_image,
        gateway_min_replicas=args.gateway_replicas,
        gateway_max_replicas=args.gateway_max_replicas,
    )
    objects = kserve_manifests(opts)
    validate_manifests(objects)
    files = {file_name(o): dump(o) for o in objects}
    if not args.dry_run:
        files["kustomization.yaml"] = dump(kustomization(objects))
    return _emit(files, args, next_steps(opts, args.out or "DIR"))


def _azureml(args: argparse.Namespace) -> int:
    from tritonkit.deploy.azureml import (
        AzureMLOptions,
        az_commands,
        azureml_documents,
        validate_azureml,
    )
    from tritonkit.deploy.yamlio import dump

    opts = AzureMLOptions(
        **_common_options(args),
        endpoint=args.endpoint,
        slot=args.slot,
        model_name=args.model_name,
        model_type=args.model_type,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        auth_mode=args.auth_mode,
        request_timeout_ms=args.request_timeout_ms,
    )
    docs = azureml_documents(opts)
    validate_azureml(docs)
    files = {name: dump(doc) for name, doc in docs.items()}
    return _emit(files, args, az_commands(opts, args.out or "DIR"))
