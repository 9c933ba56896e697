"""Manifests for KServe on AKS: one release of the model repository served by Triton
replicas, with the OpenAI-compatible gateway in front.

    Blob PREFIX/releases/R/ --storage initializer--> predictor pods (tritonkit's Triton image)
        <-- headless Service NAME-triton (every ready pod's IP) <-- gateway Deployment (HPA)

Per release (never changed once applied, so no running pod's input moves):
  ServingRuntime NAME-triton-rR   Triton: explicit model control, restricted APIs, metrics
  InferenceService NAME-rR        RawDeployment, storageUri at the release, GPU pool, KEDA
Shared:
  Namespace, ServiceAccount NAME-triton (workload identity: the storage initializer reads Blob)
  Service NAME-triton (headless: the gateway resolves every replica and balances itself;
                       one HTTP/2 connection through a ClusterIP would pin to one pod)
  Deployment / Service / HorizontalPodAutoscaler NAME-gateway

Rollout: KServe's canaryTrafficPercent works only in Serverless mode (Knative revisions);
in RawDeployment mode a new release is a second InferenceService. The headless Service
selects the release(s) the gateway sends to: with ``previous_release`` it selects both
(traffic splits by ready replicas, the gateway balancing least-in-flight across all),
without it only the new one (blue/green switch). Then delete the old InferenceService.

Autoscaling: Triton's own queue metric (nv_inference_queue_duration_us) stays near 0 for
the decoupled entry model, which accepts every request at once and queues it itself, so
KEDA scales on the entry model's own gauges (tritonkit_waiting_requests) via Prometheus.

Secrets are referenced by name, never written: ``secret_commands`` says how to create them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from tritonkit.core.layout import decoder_model_name
from tritonkit.errors import ManifestError

from .release_ref import (
    DEMO_ENTRY_MODELS,
    DEMO_MODELS,
    ReleaseRef,
    check_engine,
    check_image,
    check_models,
)

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
GATEWAY_PORT = 9000
IMAGE_UID = 1001  # the Dockerfile's user tritonkit
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the storageUri's files
KEDA_WAITING_METRIC = "tritonkit_waiting_requests"  # the entry model's own gauge
ADMIN_KEY_SECRET = "tritonkit-triton-admin"  # key: admin-key
API_KEYS_SECRET = "tritonkit-gateway-api-keys"  # key: api-keys (one key a line)
METRICS_KEY_SECRET = "tritonkit-gateway-metrics-key"  # key: metrics-key (Prometheus has it too)
MONITORING_SECRETS_DIR = "/etc/prometheus/secrets"  # where kube-prometheus mounts its secrets
DEFAULT_PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
MONITORING_NAMESPACE = "monitoring"  # where create_cluster.sh installs Prometheus (scrapes 8002)
# Every container here: no privilege escalation, no Linux capability, the runtime's
# default seccomp filter.
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# --gpu-type: short names for AKS GPU VM sizes (node selector on the size label); any
# Standard_* size is taken as is.
GPU_SKUS = {
    "t4": "Standard_NC4as_T4_v3",
    "a10": "Standard_NV36ads_A10_v5",
    "a100": "Standard_NC24ads_A100_v4",
    "h100": "Standard_NC40ads_H100_v5",
}
GPU_TAINT = ("sku", "gpu", "NoSchedule")  # deploy/aks/create_cluster.sh taints the pool so
NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")  # room for "-r<R>-predictor-..."
NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LABEL_APP = "tritonkit.dev/app"
LABEL_RELEASE = "tritonkit.dev/release"
LABEL_COMPONENT = "tritonkit.dev/component"  # triton | gateway: the headless Service takes triton
# Seconds a stopping replica has to finish its streams (scale-down, a release deleted);
# Triton gets a little less, after the preStop pause that lets DNS forget the pod.
GRACE_S = 600
PRESTOP_S = 15
# CPU a replica requests: what the GPU VM size leaves after AKS reserves its share.
CPU_REQUEST = {"Standard_NC4as_T4_v3": "3"}


@dataclass(frozen=True)
class KServeOptions:
    """What to generate. ``release`` names the Blob release; the rest has defaults that
    fit ``deploy/aks/create_cluster.sh``."""

    release: ReleaseRef
    image: str  # tritonkit's Triton image (Dockerfile) in a registry the cluster can pull
    namespace: str = "tritonkit"
    name: str = "tritonkit"
    models: tuple[str, ...] = DEMO_MODELS  # loaded with explicit model control
    entry_models: tuple[str, ...] = DEMO_ENTRY_MODELS  # what the gateway serves
    min_replicas: int = 1
    max_replicas: int = 4
    gpu_type: str = "a100"  # a GPU_SKUS key or an AKS VM size (Standard_...)
    gpus_per_replica: int = 1
    client_id: str | None = None  # the managed identity's client id (workload identity)
    previous_release: int | None = None  # still served while the new one warms up
    waiting_per_replica: int = 4  # KEDA target: average waiting requests per replica
    prometheus_url: str = DEFAULT_PROMETHEUS
    gateway_image: str | None = None  # default: image (it carries tritonkit[gateway])
    engine: str = "onnxruntime"  # what the release was built with: picks the image's kind
    gateway_min_replicas: int = 2
    gateway_max_replicas: int = 8
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def gpu_sku(self) -> str:
        return GPU_SKUS.get(self.gpu_type, self.gpu_type)

    @property
    def runtime_name(self) -> str:
        return f"{self.name}-triton-r{self.release.release}"

    @property
    def isvc_name(self) -> str:
        return f"{self.name}-r{self.release.release}"

    @property
    def service_account(self) -> str:
        return f"{self.name}-triton"

    @property
    def headless_service(self) -> str:
        return f"{self.name}-triton"

    @property
    def gateway_name(self) -> str:
        return f"{self.name}-gateway"

    @property
    def discover_address(self) -> str:
        """The headless Service's DNS name and gRPC port, for ``--triton-discover``."""
        return f"{self.headless_service}.{self.namespace}.svc.cluster.local:{GRPC_PORT}"

    def check(self) -> KServeOptions:
        """Return self when the options make valid manifests.

        Raises:
            ManifestError: the first option that would not (says which).
        """
        self.release.check()
        check_image(self.image)
        check_image(self.gateway_image or self.image, "gateway image")
        check_engine(self.image, self.engine)
        check_models(self.models, self.entry_models)
        if not NAME_RE.match(self.name):
            raise ManifestError(
                f"name {self.name!r}: 1-32 lowercase letters, digits and '-', starting with a "
                "letter (objects are named NAME-rR, NAME-gateway, ...)"
            )
        if not NAMESPACE_RE.match(self.namespace):
            raise ManifestError(f"namespace {self.namespace!r} is not a Kubernetes namespace name")
        if not self.gpu_sku.startswith("Standard_") or not re.match(r"^[A-Za-z0-9_]+$",
                                                                    self.gpu_sku):  # fmt: skip
            raise ManifestError(
                f"GPU type {self.gpu_type!r}: one of {', '.join(GPU_SKUS)} or an AKS VM size "
                "(Standard_...)"
            )
        for what, low, high in (
            ("replicas", self.min_replicas, self.max_replicas),
            ("gateway replicas", self.gateway_min_replicas, self.gateway_max_replicas),
        ):
            if low < 1 or high < low:
                raise ManifestError(
                    f"{what}: min {low}, max {high}; need 1 <= min <= max (a GPU replica "
                    "takes minutes to start, so the minimum stays at one or more)"
                )
        if not 1 <= self.gpus_per_replica <= 8:
            raise ManifestError(f"GPUs per replica {self.gpus_per_replica}: 1..8")
        if self.waiting_per_replica < 1:
            raise ManifestError("waiting requests per replica must be 1 or more")
        if self.client_id is not None and not UUID_RE.match(self.client_id):
            raise ManifestError(f"client id {self.client_id!r} is not a lowercase GUID")
        if self.previous_release is not None and not (
            1 <= self.previous_release != self.release.release
        ):
            raise ManifestError("the previous release must be another release number")
        if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._/-]*)?$",
                        self.prometheus_url):  # fmt: skip
            raise ManifestError(f"Prometheus URL {self.prometheus_url!r} is not http(s)://HOST")
        return self


def _meta(name: str, opts: KServeOptions, **extra: Any) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/part-of": "tritonkit",
        "app.kubernetes.io/managed-by": "tritonkit-deploy",
        "tritonkit.dev/engine": opts.engine,
        **opts.extra_labels,
        **extra.pop("labels", {}),
    }
    return {"name": name, "namespace": opts.namespace, "labels": labels, **extra}


def _tolerations() -> list[dict[str, str]]:
    key, value, effect = GPU_TAINT
    return [
        {"key": key, "operator": "Equal", "value": value, "effect": effect},
        # AKS GPU pools may also carry the NVIDIA device plugin's own taint.
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def namespace(opts: KServeOptions) -> dict[str, Any]:
    meta = _meta(opts.namespace, opts)
    del meta["namespace"]
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def service_account(opts: KServeOptions) -> dict[str, Any]:
    """The identity of the predictor pods: workload identity lets the storage initializer
    read the release from Blob (Storage Blob Data Reader) with no key anywhere."""
    annotations = {}
    if opts.client_id:
        annotations["azure.workload.identity/client-id"] = opts.client_id
    meta = _meta(opts.service_account, opts)
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def serving_runtime(opts: KServeOptions) -> dict[str, Any]:
    """Triton from tritonkit's own image (onnxruntime + tokenizers in the python backend),
    started by deploy/triton-entrypoint.sh: explicit model control loading the release's
    models, the restricted APIs locked with the admin key from a Secret."""
    entry = opts.entry_models[0]
    # Not the decoder models: the entry model runs their graph in-process, and Triton's
    # onnxruntime backend would hold a second copy of the weights on the GPU (the KV
    # budget of `repo build --target gpu` counts one). Load one by hand for perf_analyzer.
    decoders = {decoder_model_name(e) for e in opts.entry_models}
    args = [f"--load-model={m}" for m in opts.models if m != entry and m not in decoders]
    container = {
        "name": "kserve-container",
        "image": opts.image,
        "args": args,
        "env": [
            {"name": "MODEL_REPOSITORY", "value": MODEL_DIR},
            {"name": "MODEL_NAME", "value": entry},
            {
                "name": "TRITON_ADMIN_KEY",
                "valueFrom": {"secretKeyRef": {"name": ADMIN_KEY_SECRET, "key": "admin-key"}},
            },
            {"name": "EXIT_TIMEOUT_SECS", "value": str(GRACE_S - PRESTOP_S - 15)},
        ],
        # Leave the headless Service's DNS before Triton stops taking requests.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
        # The python backend passes tensors through /dev/shm (compose gives it 1g too);
        # Kubernetes' default is 64 MiB.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        # KServe's Service and probes use the first port; gRPC (8001) is reached through
        # the headless Service, metrics (8002) through the pod annotations below.
        "ports": [{"containerPort": HTTP_PORT, "name": "http1", "protocol": "TCP"}],
        # Triton's readiness plus the entry model's tritonkit_engine_broken gauge
        # (`tritonkit probe`): Triton alone reports a model whose engine gave up as ready.
        "readinessProbe": {
            "exec": {"command": ["tritonkit", "probe"]},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Live: Triton answers, and no entry model's engine gave up (a restart reloads it;
        # readiness alone would keep the pod and its GPU out of service for good).
        "livenessProbe": {
            "exec": {"command": ["tritonkit", "probe", "--live"]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # Loading a large model takes minutes: liveness waits for the first start.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
            "periodSeconds": 10,
            "failureThreshold": 90,
        },
        # The image's USER is a name (tritonkit, uid 1001): runAsNonRoot needs the number.
        "securityContext": {**HARDENED, "runAsNonRoot": True, "runAsUser": IMAGE_UID},
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _meta(opts.runtime_name, opts),
        "spec": {
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
            "supportedModelFormats": [{"name": "triton", "version": "2", "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [container],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        },
    }


def inference_service(opts: KServeOptions) -> dict[str, Any]:
    """The release on GPU replicas: RawDeployment (plain Deployments, no Knative), KEDA
    scaling on the entry model's waiting requests through Prometheus."""
    r = opts.release
    env = []
    if r.sha256:
        # deploy/triton-entrypoint.sh checks the downloaded release against this pin.
        env.append({"name": "TRITONKIT_RELEASE_SHA256", "value": r.sha256})
    pods = f"{opts.isvc_name}-predictor-.*"
    # sum over this release's pods; KEDA (AverageValue) divides by the replica count.
    # Triton's nv_inference_queue_duration_us stays ~0: the decoupled entry model takes
    # each request at once and queues it itself, so the queue is only visible here.
    query = f'sum({KEDA_WAITING_METRIC}{{namespace="{opts.namespace}",pod=~"{pods}"}})'
    resources = {
        "requests": {
            "cpu": CPU_REQUEST.get(opts.gpu_sku, "4"),
            "memory": "16Gi",
            "nvidia.com/gpu": str(opts.gpus_per_replica),
        },
        "limits": {"memory": "64Gi", "nvidia.com/gpu": str(opts.gpus_per_replica)},
    }
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton", "version": "2"},
        "runtime": opts.runtime_name,
        "protocolVersion": "v2",
        "storageUri": r.url,
        "resources": resources,
    }
    if env:
        model["env"] = env
    predictor: dict[str, Any] = {
        "serviceAccountName": opts.service_account,
        "minReplicas": opts.min_replicas,
        "maxReplicas": opts.max_replicas,
        "labels": {
            "azure.workload.identity/use": "true",
            LABEL_APP: opts.name,
            LABEL_COMPONENT: "triton",
            LABEL_RELEASE: str(r.release),
        },
        "terminationGracePeriodSeconds": GRACE_S,
        # Triton calls no Kubernetes API; Azure's workload identity projects its own token.
        "automountServiceAccountToken": False,
        "nodeSelector": {"node.kubernetes.io/instance-type": opts.gpu_sku},
        "tolerations": _tolerations(),
        "deploymentStrategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "autoScaling": {
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "backend": "prometheus",
                            "serverAddress": opts.prometheus_url,
                            "query": query,
                        },
                        "target": {"type": "Value", "value": str(opts.waiting_per_replica)},
                    },
                }
            ],
            # (no ``behavior``: KServe does not copy it into the ScaledObject it makes)
        },
        "model": model,
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _meta(
            opts.isvc_name,
            opts,
            annotations={
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/autoscalerClass": "keda",
            },
            labels={LABEL_RELEASE: str(r.release)},
        ),
        "spec": {"predictor": predictor},
    }


def headless_service(opts: KServeOptions) -> dict[str, Any]:
    """Every ready predictor pod's address in DNS: the gateway resolves them all and
    balances its gRPC streams itself (``--triton-discover``)."""
    selector = {LABEL_APP: opts.name, LABEL_COMPONENT: "triton"}  # never the gateway's pods
    if opts.previous_release is None:
        selector[LABEL_RELEASE] = str(opts.release.release)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts.headless_service, opts),
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
            ],
        },
    }


def _gateway_labels(opts: KServeOptions) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tritonkit-gateway",
        LABEL_APP: opts.name,
        LABEL_COMPONENT: "gateway",
    }


def gateway_deployment(opts: KServeOptions) -> dict[str, Any]:
    """The OpenAI-compatible gateway: no admin key, API keys from a Secret, the entry
    models by name (so it never needs Triton's restricted repository index)."""
    secret_dir = "/run/secrets/tritonkit"
    args = [
        "gateway",
        f"--triton-discover={opts.discover_address}",
        "--host=0.0.0.0",
        f"--port={GATEWAY_PORT}",
        f"--api-keys-file={secret_dir}/api-keys",
        *(f"--model-map={m}={m}" for m in opts.entry_models),
    ]
    labels = _gateway_labels(opts)
    container = {
        "name": "gateway",
        "image": opts.gateway_image or opts.image,
        "command": ["tritonkit"],
        "args": args,
        "env": [
            {
                "name": "TRITONKIT_GATEWAY_METRICS_KEY",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": METRICS_KEY_SECRET,
                        "key": "metrics-key",
                    }
                },
            }
        ],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
        # /health is 503 until a Triton replica is ready: no traffic before that, but a
        # gateway waiting for Triton is alive (liveness only checks the port).
        "readinessProbe": {"httpGet": {"path": "/health", "port": GATEWAY_PORT}},
        "livenessProbe": {"tcpSocket": {"port": GATEWAY_PORT}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        },
        "volumeMounts": [{"name": "api-keys", "mountPath": secret_dir, "readOnly": True}],
        "securityContext": {**HARDENED, "runAsNonRoot": True, "runAsUser": IMAGE_UID},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts.gateway_name, opts),
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(GATEWAY_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "api-keys",
                            "secret": {
                                "secretName": API_KEYS_SECRET,
                                "items": [{"key": "api-keys", "path": "api-keys"}],
                            },
                        }
                    ],
                },
            },
        },
    }


def gateway_service(opts: KServeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts.gateway_name, opts),
        "spec": {
            "type": "ClusterIP",
            "selector": _gateway_labels(opts),
            "ports": [{"name": "http", "port": 80, "targetPort": GATEWAY_PORT}],
        },
    }


def gateway_hpa(opts: KServeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(opts.gateway_name, opts),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": opts.gateway_name,
            },
            "minReplicas": opts.gateway_min_replicas,
            "maxReplicas": opts.gateway_max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def triton_network_policy(opts: KServeOptions) -> dict[str, Any]:
    """Only the gateway reaches Triton's gRPC and HTTP ports, and only Prometheus (in
    ``MONITORING_NAMESPACE``) its metrics port: any other pod would go around the
    gateway's keys and limits. (Kubelet probes come from the node and are not pod
    traffic.)"""
    triton = {LABEL_APP: opts.name, LABEL_COMPONENT: "triton"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{opts.name}-triton", opts),
        "spec": {
            "podSelector": {"matchLabels": triton},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _gateway_labels(opts)}}],
                    "ports": [
                        {"protocol": "TCP", "port": GRPC_PORT},
                        {"protocol": "TCP", "port": HTTP_PORT},
                    ],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                },
            ],
        },
    }


def gateway_network_policy(opts: KServeOptions) -> dict[str, Any]:
    """The gateway takes connections on its one port only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{opts.name}-gateway", opts),
        "spec": {
            "podSelector": {"matchLabels": _gateway_labels(opts)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}],
        },
    }


def kserve_manifests(opts: KServeOptions) -> list[dict[str, Any]]:
    """Every object, in apply order (namespace first).

    Raises:
        ManifestError: options that would make an invalid manifest.
    """
    opts.check()
    return [
        namespace(opts),
        service_account(opts),
        serving_runtime(opts),
        inference_service(opts),
        headless_service(opts),
        gateway_deployment(opts),
        gateway_service(opts),
        gateway_hpa(opts),
        triton_network_policy(opts),
        gateway_network_policy(opts),
    ]


def file_name(obj: dict[str, Any]) -> str:
    """``KIND-NAME.yaml`` in lowercase: one file per object."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def kustomization(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The kustomization listing each object's file (``kubectl apply -k DIR``)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [file_name(o) for o in objects],
    }


def secret_commands(opts: KServeOptions) -> list[str]:
    """The kubectl commands that create the Secrets the manifests reference (values are
    made or read on your machine; none is in the manifests)."""
    ns = shlex.quote(opts.namespace)
    return [
        f"kubectl create secret generic {ADMIN_KEY_SECRET} -n {ns} "
        '--from-literal=admin-key="$(openssl rand -hex 32)"',
        f"kubectl create secret generic {API_KEYS_SECRET} -n {ns} "
        "--from-file=api-keys=gateway_api_keys.txt",
        # The gateway's /metrics key, in its namespace and in Prometheus's, which scrapes
        # the gateway with it (deploy/aks/create_cluster.sh makes both).
        f"kubectl get secret {METRICS_KEY_SECRET} -n {ns} >/dev/null 2>&1 || {{ "
        'key="$(openssl rand -hex 32)"; '
        f"kubectl create secret generic {METRICS_KEY_SECRET} -n {ns} "
        '--from-literal=metrics-key="$key" && '
        f"kubectl create secret generic {METRICS_KEY_SECRET} -n {MONITORING_NAMESPACE} "
        '--from-literal=metrics-key="$key"; }',
    ]


def next_steps(opts: KServeOptions, folder: str) -> str:
    """What to run after the manifests are written."""
    lines = [f"kubectl apply -f {shlex.quote(folder)}/namespace-{opts.namespace}.yaml"]
    lines += secret_commands(opts)
    if not opts.client_id:
        lines.append(
            f"kubectl annotate serviceaccount {opts.service_account} -n {opts.namespace} "
            "azure.workload.identity/client-id=CLIENT_ID  # (or pass --client-id)"
        )
    lines.append(f"kubectl apply -k {shlex.quote(folder)}")
    lines.append(
        f"kubectl wait -n {opts.namespace} --for=condition=Ready "
        f"inferenceservice/{opts.isvc_name} --timeout=30m"
    )
    if opts.previous_release is not None:
        lines.append(
            f"# both releases serve now; when r{opts.release.release} looks good, regenerate "
            "without --previous-release, apply, then: "
            f"kubectl delete inferenceservice -n {opts.namespace} "
            f"{opts.name}-r{opts.previous_release} && kubectl delete servingruntime -n "
            f"{opts.namespace} {opts.name}-triton-r{opts.previous_release}"
        )
    lines.append(
        f"kubectl port-forward -n {opts.namespace} svc/{opts.gateway_name} 9000:80  "
        "# then http://127.0.0.1:9000/v1"
    )
    return "\n".join(lines)
