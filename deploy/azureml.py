"""Azure ML managed online endpoint YAML for one release: a model, an endpoint, and
blue/green deployments of tritonkit's Triton image as a custom container.

    model-rR.yml        the release folder in Blob as a registered model (custom_model)
    endpoint.yml        the endpoint (auth: key or aml_token)
    deployment-SLOT.yml the image, mounting the model, routes to Triton's HTTP API

Azure ML fronts HTTP only: no gRPC and so no token streaming through the endpoint, and a
request is cut at request_timeout_ms (180000 ms at most). The scoring route is Triton's
generate extension of the entry model (one response per request).

``triton_model`` (Azure ML's no-code Triton) is refused: it runs Azure ML's own Triton
image, whose python backend cannot import onnxruntime or tokenizers, which tritonkit's
entry model needs.

``validate_azureml`` loads each document with azure-ai-ml (``load_model``,
``load_online_endpoint``, ``load_online_deployment``) and adds what the SDK lets through
but Azure refuses (``check_azureml``).
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.blob.manifest import release_folder
from tritonkit.errors import ManifestError

from .release_ref import (
    DEMO_ENTRY_MODELS,
    DEMO_MODELS,
    ReleaseRef,
    check_engine,
    check_image,
    check_models,
)

MAX_REQUEST_TIMEOUT_MS = 180_000  # Azure ML refuses more (the SDK does not check)
ENDPOINT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # 3-32
DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # 3-32
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
INSTANCE_RE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
MOUNT = "/models"  # model_mount_path; the model folder's own name ("R") is kept under it
HTTP_PORT = 8000
ADMIN_KEY_CONNECTION = "tritonkit-triton-admin"  # workspace connection holding admin-key
MODEL_TYPES = ("custom_model", "triton_model", "mlflow_model")
SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"


@dataclass(frozen=True)
class AzureMLOptions:
    """What to generate: ``release`` into deployment ``slot``; with ``previous_release``
    the other slot serves that one, for a blue/green traffic shift."""

    release: ReleaseRef
    image: str  # tritonkit's Triton image in the workspace's registry (or one it can pull)
    endpoint: str = "tritonkit-llm"
    slot: str = "blue"
    previous_release: int | None = None
    model_name: str = "tritonkit-repository"
    model_type: str = "custom_model"
    models: tuple[str, ...] = DEMO_MODELS
    entry_models: tuple[str, ...] = DEMO_ENTRY_MODELS
    instance_type: str = "Standard_NC24ads_A100_v4"
    instance_count: int = 1
    auth_mode: str = "key"
    request_timeout_ms: int = MAX_REQUEST_TIMEOUT_MS
    max_concurrent_requests: int = 32  # per instance; the entry model batches them itself
    engine: str = "onnxruntime"  # what the release was built with: picks the image's kind

    @property
    def other_slot(self) -> str:
        return "blue" if self.slot == "green" else "green"

    def check(self) -> AzureMLOptions:
        """Return self when the options make YAML Azure ML would accept.

        Raises:
            ManifestError: the first option that would be refused (says which and why).
        """
        if self.model_type == "triton_model":
            raise ManifestError(
                "model type triton_model (Azure ML's no-code Triton) cannot serve tritonkit: "
                "its python backend cannot import onnxruntime or tokenizers; use custom_model "
                "with tritonkit's image"
            )
        if self.model_type not in MODEL_TYPES:
            raise ManifestError(f"model type {self.model_type!r}: use custom_model")
        self.release.check()
        check_image(self.image)
        check_engine(self.image, self.engine)
        check_models(self.models, self.entry_models)
        if self.previous_release is not None and not (
            1 <= self.previous_release != self.release.release
        ):
            raise ManifestError("the previous release must be another release number")
        if not MODEL_NAME_RE.match(self.model_name):
            raise ManifestError(f"model name {self.model_name!r}: letters, digits, '_.-'")
        if not INSTANCE_RE.match(self.instance_type):
            raise ManifestError(f"instance type {self.instance_type!r} is not a VM size")
        if not 1 <= self.instance_count <= 100:
            raise ManifestError(f"instance count {self.instance_count}: 1..100")
        if self.auth_mode not in ("key", "aml_token"):
            raise ManifestError(f"auth mode {self.auth_mode!r}: key or aml_token")
        if self.max_concurrent_requests < 1:
            raise ManifestError("max concurrent requests per instance must be 1 or more")
        if self.slot not in ("blue", "green"):
            raise ManifestError(f"slot {self.slot!r}: blue or green")
        check_azureml(
            {
                "endpoint.yml": self._endpoint_doc(),
                f"deployment-{self.slot}.yml": {
                    "name": self.slot,
                    "endpoint_name": self.endpoint,
                    "request_settings": {"request_timeout_ms": self.request_timeout_ms},
                },
            }
        )
        return self

    def _endpoint_doc(self) -> dict[str, Any]:
        return {
            "$schema": SCHEMA.format("managedOnlineEndpoint"),
            "name": self.endpoint,
            "auth_mode": self.auth_mode,
            "description": "tritonkit: Triton behind an Azure ML managed online endpoint",
            # lets deployments read the admin key from a workspace connection (preview)
            "properties": {"enforce_access_to_default_secret_stores": "enabled"},
        }


def model_doc(opts: AzureMLOptions, release: int) -> dict[str, Any]:
    """The release folder in Blob as a model version (version = release number)."""
    ref = ReleaseRef(release, opts.release.container, opts.release.account_url, opts.release.prefix)
    return {
        "$schema": SCHEMA.format("model"),
        "name": opts.model_name,
        "version": str(release),
        "type": opts.model_type,
        "path": ref.url,
        "description": f"tritonkit model repository, release {release} (immutable)",
    }


def deployment_doc(
    opts: AzureMLOptions, slot: str, release: int, sha256: str | None
) -> dict[str, Any]:
    """A custom-container deployment of tritonkit's Triton image serving ``release``."""
    entry = opts.entry_models[0]
    env: dict[str, str] = {
        # Azure ML mounts a folder model under model_mount_path keeping its own name
        # (the release folder), as in Azure's custom-container examples.
        "MODEL_REPOSITORY": f"{MOUNT}/{release_folder(release)}",
        "MODEL_NAME": entry,
        # Secret injection (preview): the value comes from a workspace connection when the
        # container starts; it is never in this file.
        "TRITON_ADMIN_KEY": (
            f"${{{{azureml://connections/{ADMIN_KEY_CONNECTION}/credentials/admin-key}}}}"
        ),
    }
    if sha256:
        env["TRITONKIT_RELEASE_SHA256"] = sha256
    route = {"port": HTTP_PORT}
    return {
        "$schema": SCHEMA.format("managedOnlineDeployment"),
        "name": slot,
        "endpoint_name": opts.endpoint,
        "model": f"azureml:{opts.model_name}:{release}",
        "model_mount_path": MOUNT,
        "environment": {
            "name": "tritonkit-triton",
            "image": opts.image,
            "inference_config": {
                "liveness_route": {**route, "path": "/v2/health/live"},
                "readiness_route": {**route, "path": "/v2/health/ready"},
                "scoring_route": {**route, "path": f"/v2/models/{entry}/generate"},
            },
        },
        "environment_variables": env,
        "instance_type": opts.instance_type,
        "instance_count": opts.instance_count,
        "request_settings": {
            "request_timeout_ms": opts.request_timeout_ms,
            "max_concurrent_requests_per_instance": opts.max_concurrent_requests,
        },
        # A large model loads for minutes before /v2/health/ready answers.
        "liveness_probe": {"initial_delay": 600, "period": 10, "failure_threshold": 30},
        "readiness_probe": {"initial_delay": 60, "period": 10, "failure_threshold": 60},
    }


def azureml_documents(opts: AzureMLOptions) -> dict[str, dict[str, Any]]:
    """File name -> document: the model version(s), the endpoint, the deployment(s).

    Raises:
        ManifestError: options Azure ML would refuse.
    """
    opts.check()
    r = opts.release.release
    docs = {f"model-r{r}.yml": model_doc(opts, r), "endpoint.yml": opts._endpoint_doc()}
    docs[f"deployment-{opts.slot}.yml"] = deployment_doc(opts, opts.slot, r, opts.release.sha256)
    if opts.previous_release is not None:
        p = opts.previous_release
        docs[f"model-r{p}.yml"] = model_doc(opts, p)
        docs[f"deployment-{opts.other_slot}.yml"] = deployment_doc(opts, opts.other_slot, p, None)
    return docs


def check_azureml(docs: dict[str, dict[str, Any]]) -> None:
    """What azure-ai-ml accepts but Azure refuses.

    Raises:
        ManifestError: an endpoint or deployment name outside Azure's rules, or a request
            timeout over 180000 ms.
    """
    for file, doc in docs.items():
        if "auth_mode" in doc or file.startswith("endpoint"):
            name = str(doc.get("name", ""))
            if not ENDPOINT_RE.match(name):
                raise ManifestError(
                    f"{file}: endpoint name {name!r}: 3-32 characters, letters, digits and "
                    "'-', starting with a letter and not ending with '-' (Azure ML's rule)"
                )
        if "endpoint_name" in doc:
            name = str(doc.get("name", ""))
            if not DEPLOYMENT_RE.match(name):
                raise ManifestError(
                    f"{file}: deployment name {name!r}: 3-32 characters, letters, digits "
                    "and '-', not starting or ending with '-' (Azure ML's rule)"
                )
            timeout = (doc.get("request_settings") or {}).get("request_timeout_ms")
            if timeout is not None and (
                not isinstance(timeout, int) or not 1 <= timeout <= MAX_REQUEST_TIMEOUT_MS
            ):
                raise ManifestError(
                    f"{file}: request_timeout_ms {timeout!r}: Azure ML allows at most "
                    f"{MAX_REQUEST_TIMEOUT_MS} (3 minutes); longer generations need the "
                    "KServe path (streaming over gRPC)"
                )
        if doc.get("type") == "triton_model":
            raise ManifestError(
                f"{file}: triton_model cannot serve tritonkit: Azure ML's Triton python "
                "backend cannot import onnxruntime or tokenizers"
            )


def validate_azureml(docs: dict[str, dict[str, Any]]) -> None:
    """Load each document with azure-ai-ml, then apply ``check_azureml``.

    Raises:
        ManifestError: the SDK's first complaint (one line), or what Azure would refuse.
    """
    from .yamlio import dump

    check_azureml(docs)
    try:
        from azure.ai.ml import load_model, load_online_deployment, load_online_endpoint
    except ImportError as exc:  # pragma: no cover - the deploy extra installs it
        raise ManifestError("azure-ai-ml is missing: pip install 'tritonkit[deploy]'") from exc
    with tempfile.TemporaryDirectory() as tmp:
        for file, doc in docs.items():
            path = Path(tmp) / file
            path.write_text(dump(doc))
            schema = str(doc.get("$schema", ""))
            if "managedOnlineDeployment" in schema or "endpoint_name" in doc:
                loader: Any = load_online_deployment
            elif "OnlineEndpoint" in schema or "auth_mode" in doc:
                loader = load_online_endpoint
            elif "model.schema" in schema:
                loader = load_model
            else:
                raise ManifestError(f"{file}: not a model, endpoint or deployment document")
            try:
                loader(source=str(path))
            except Exception as exc:  # the SDK raises marshmallow and its own errors
                raise ManifestError(f"{file}: azure-ai-ml refuses it: {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text.split(" Visit this link", 1)[0]
    return text[:400]


def az_commands(opts: AzureMLOptions, folder: str) -> str:
    """The ``az ml`` commands that create everything, in order, and shift traffic."""
    q = shlex.quote
    r = opts.release.release
    ws = "--resource-group RG --workspace-name WS"
    lines = [
        f"# the admin key as a workspace connection (secret injection, preview): "
        f"az ml connection create {ws} --file connection.yml  "
        f"(name {ADMIN_KEY_CONNECTION}, type custom_keys, keys: admin-key: "
        '"$(openssl rand -hex 32)")',
        f"az ml model create {ws} --file {q(folder)}/model-r{r}.yml",
    ]
    if opts.previous_release is not None:
        lines.append(
            f"az ml model create {ws} --file {q(folder)}/model-r{opts.previous_release}.yml"
            "  # if not registered yet"
        )
    lines += [
        f"az ml online-endpoint create {ws} --file {q(folder)}/endpoint.yml  # once",
        f"az ml online-deployment create {ws} --file {q(folder)}/deployment-{opts.slot}.yml "
        "--all-traffic" if opts.previous_release is None else
        f"az ml online-deployment create {ws} --file {q(folder)}/deployment-{opts.slot}.yml",
    ]  # fmt: skip
    if opts.previous_release is not None:
        e, new, old = opts.endpoint, opts.slot, opts.other_slot
        lines += [
            f'az ml online-endpoint update {ws} --name {e} --traffic "{old}=90 {new}=10"',
            f'az ml online-endpoint update {ws} --name {e} --traffic "{old}=0 {new}=100"',
            f"az ml online-deployment delete {ws} --endpoint-name {e} --name {old} --yes",
        ]
    lines.append(
        f"az ml online-endpoint invoke {ws} --name {opts.endpoint} --request-file req.json"
        '  # req.json: {"text_input": "Hello", "max_tokens": 32}'
    )
    return "\n".join(lines)
