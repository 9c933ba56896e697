"""KServe / Kubernetes / Azure ML manifests, generated and validated offline (no cluster,
no Azure: the CRDs' schemas, kubernetes-validate's strict schemas and azure-ai-ml's loaders
stand in for the API servers that are out of reach here). Each check is shown to fail on
a broken object as well as to pass on the generated ones."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonkit.cli import run
from tritonkit.deploy.azureml import AzureMLOptions, azureml_documents, validate_azureml
from tritonkit.deploy.kserve import KServeOptions, kserve_manifests
from tritonkit.deploy.release_ref import ReleaseRef, models_in_repository
from tritonkit.deploy.validate import strict_schema, validate_manifests, validate_object
from tritonkit.errors import ManifestError

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef" * 4
ACCOUNT = "https://tkstore.blob.core.windows.net"
IMAGE = "tkacr.azurecr.io/tritonkit-triton:24.10"
CLIENT_ID = "12345678-90ab-cdef-1234-567890abcdef"
KSERVE_ARGS = ["deploy", "kserve", "--release", "7", "--container", "models", "--prefix",
               "team/llm", "--account-url", ACCOUNT, "--image", IMAGE,
               "--release-sha256", SHA, "--client-id", CLIENT_ID]  # fmt: skip
AZUREML_ARGS = ["deploy", "azureml", "--release", "7", "--container", "models", "--prefix",
                "team/llm", "--account-url", ACCOUNT, "--image", IMAGE,
                "--release-sha256", SHA]  # fmt: skip


def _ref(**kw) -> ReleaseRef:
    return ReleaseRef(**{"release": 7, "container": "models", "account_url": ACCOUNT,
                         "prefix": "team/llm", "sha256": SHA, **kw})  # fmt: skip


@pytest.fixture(scope="module")
def objects():
    return kserve_manifests(KServeOptions(_ref(), IMAGE, client_id=CLIENT_ID))


def _by_kind(objects, kind, name_part=""):
    return next(o for o in objects if o["kind"] == kind and name_part in o["metadata"]["name"])


# ---- KServe on AKS: generation --------------------------------------------------------


def test_every_generated_object_validates(objects):
    validate_manifests(objects)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServingRuntime", "InferenceService",
                            "Service", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "NetworkPolicy", "NetworkPolicy"])  # fmt: skip


def test_only_the_gateway_and_prometheus_reach_triton(objects):
    """NetworkPolicies: Triton's gRPC/HTTP from the gateway's pods only, its metrics from
    the monitoring namespace only; every container hardened; no service account token
    where nothing calls the Kubernetes API. A policy that let any pod in fails here."""
    by_kind: dict[str, list] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    gateway = next(o for o in by_kind["Deployment"] if o["metadata"]["name"].endswith("gateway"))
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    isvc = by_kind["InferenceService"][0]["spec"]["predictor"]

    def selects(policy: dict, labels: dict) -> bool:
        wanted = policy["spec"]["podSelector"]["matchLabels"].items()
        return all(labels.get(k) == v for k, v in wanted)

    triton_policy = next(p for p in by_kind["NetworkPolicy"] if selects(p, isvc["labels"]))
    assert triton_policy["spec"]["policyTypes"] == ["Ingress"]
    rules = triton_policy["spec"]["ingress"]
    assert all(rule.get("from") for rule in rules)  # no rule open to every source
    reach = {}
    for rule in rules:
        for port in rule["ports"]:
            reach[port["port"]] = rule["from"]
    assert set(reach) == {8000, 8001, 8002}
    assert reach[8001] == [{"podSelector": {"matchLabels": gateway_labels}}]
    assert reach[8002][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    # The gateway's pods do not match Triton's selector (and vice versa).
    assert not selects(triton_policy, gateway_labels)
    containers = [
        *by_kind["ServingRuntime"][0]["spec"]["containers"],
        *gateway["spec"]["template"]["spec"]["containers"],
    ]
    for c in containers:
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and not sc["allowPrivilegeEscalation"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["runAsNonRoot"]
    assert isvc["automountServiceAccountToken"] is False
    assert gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The gateway's /metrics key is required (not optional): Prometheus scrapes with it.
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["TRITONKIT_GATEWAY_METRICS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "tritonkit-gateway-metrics-key" and not ref.get("optional")


def test_inference_service_serves_the_pinned_release_on_the_gpu_pool(objects):
    isvc = _by_kind(objects, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert model["storageUri"] == f"{ACCOUNT}/models/team/llm/releases/000007"
    assert {"name": "TRITONKIT_RELEASE_SHA256", "value": SHA} in model["env"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pred["nodeSelector"] == {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pred[
        "tolerations"
    ]
    assert pred["labels"]["azure.workload.identity/use"] == "true"
    assert pred["serviceAccountName"] == "tritonkit-triton"
    metric = pred["autoScaling"]["metrics"][0]["external"]["metric"]
    assert metric["backend"] == "prometheus" and "tritonkit_waiting_requests" in metric["query"]
    assert model["runtime"] == _by_kind(objects, "ServingRuntime")["metadata"]["name"]


def test_without_a_sha_no_pin_is_set():
    objs = kserve_manifests(KServeOptions(_ref(sha256=None), IMAGE))
    isvc = _by_kind(objs, "InferenceService")
    assert "env" not in isvc["spec"]["predictor"]["model"]
    assert "TRITONKIT_RELEASE_SHA256" not in yaml.safe_dump(objs)
    sa = _by_kind(objs, "ServiceAccount")
    assert "annotations" not in sa["metadata"]  # no client id given: annotate later
    validate_manifests(objs)


def test_serving_runtime_is_tritonkits_locked_down_triton(objects):
    rt = _by_kind(objects, "ServingRuntime")
    assert rt["spec"]["supportedModelFormats"][0] == {"name": "triton", "version": "2",
                                                      "autoSelect": False}  # fmt: skip
    assert rt["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    assert rt["spec"]["annotations"]["prometheus.io/scrape"] == "true"
    assert rt["spec"]["annotations"]["prometheus.io/port"] == "8002"
    c = rt["spec"]["containers"][0]
    assert c["image"] == IMAGE
    env = {e["name"]: e for e in c["env"]}
    assert env["MODEL_NAME"]["value"] == "llm"
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "tritonkit-triton-admin"
    # never the decoder: its weights would sit on the GPU twice (the KV budget counts one)
    assert c["args"] == ["--load-model=llm_sync"]
    assert c["readinessProbe"]["exec"]["command"] == ["tritonkit", "probe"]
    assert c["livenessProbe"]["exec"]["command"] == ["tritonkit", "probe", "--live"]
    # the entrypoint the image runs turns MODEL_NAME into explicit control + restricted APIs
    entry = (ROOT / "deploy" / "triton-entrypoint.sh").read_text()
    assert "--model-control-mode=explicit" in entry and "restricted-api" in entry


def test_gateway_discovers_every_replica_and_has_no_admin_key(objects):
    svc = _by_kind(objects, "Service", "triton")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["tritonkit.dev/release"] == "7"
    dep = _by_kind(objects, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--triton-discover=tritonkit-triton.tritonkit.svc.cluster.local:8001" in c["args"]
    assert "--model-map=llm=llm" in c["args"]
    assert "TRITON_ADMIN_KEY" not in yaml.safe_dump(dep)
    assert dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == (
        "tritonkit-gateway-api-keys"
    )
    hpa = _by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]


def test_previous_release_keeps_both_in_the_gateways_pool():
    objs = kserve_manifests(KServeOptions(_ref(), IMAGE, previous_release=6))
    svc = _by_kind(objs, "Service", "triton")
    assert "tritonkit.dev/release" not in svc["spec"]["selector"]
    assert _by_kind(objs, "InferenceService")["metadata"]["name"] == "tritonkit-r7"
    validate_manifests(objs)


@pytest.mark.parametrize("previous", [None, 6])
def test_the_headless_service_selects_the_predictor_pods_and_never_the_gateways(previous):
    objs = kserve_manifests(KServeOptions(_ref(), IMAGE, previous_release=previous))
    selector = _by_kind(objs, "Service", "triton")["spec"]["selector"].items()
    predictor = _by_kind(objs, "InferenceService")["spec"]["predictor"]["labels"].items()
    gateway = _by_kind(objs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert selector <= predictor  # the replicas are in DNS ...
    assert not selector <= gateway.items()  # ... the gateway's own pods are not


def test_replicas_stop_gracefully_with_room_in_shared_memory(objects):
    runtime = _by_kind(objects, "ServingRuntime")["spec"]
    container = runtime["containers"][0]
    grace = _by_kind(objects, "InferenceService")["spec"]["predictor"]
    exit_timeout = next(e for e in container["env"] if e["name"] == "EXIT_TIMEOUT_SECS")
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pause + int(exit_timeout["value"]) < grace["terminationGracePeriodSeconds"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    (dshm,) = [v for v in runtime["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"]["medium"] == "Memory"
    assert "behavior" not in grace["autoScaling"]  # KServe would drop it silently


def test_a_t4_replica_asks_for_the_cpu_a_t4_node_has():
    objs = kserve_manifests(KServeOptions(_ref(), IMAGE, gpu_type="t4"))
    requests = _by_kind(objs, "InferenceService")["spec"]["predictor"]["model"]["resources"]
    assert requests["requests"]["cpu"] == "3"  # NC4as_T4_v3: 4 vCPUs, AKS keeps some


def test_models_come_from_a_local_repository(tmp_path):
    for name, decoupled in (("chat", True), ("chat_decoder", False), ("chat_sync", False)):
        (tmp_path / name).mkdir()
        policy = "model_transaction_policy { decoupled: true }\n" if decoupled else ""
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n{policy}')
    models, entry = models_in_repository(tmp_path)
    assert models == ("chat", "chat_decoder", "chat_sync") and entry == ("chat",)
    objs = kserve_manifests(KServeOptions(_ref(), IMAGE, models=models, entry_models=entry))
    validate_manifests(objs)
    with pytest.raises(ManifestError, match="is not a folder"):
        models_in_repository(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="holds no model"):
        models_in_repository(empty)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"release": _ref(release=0)}, "out of range"),
        ({"release": _ref(account_url="http://evil.example.com")}, "not https://ACCOUNT"),
        ({"release": _ref(container="Models!")}, "not a Blob container name"),
        ({"release": _ref(prefix="a/../b")}, "without '..'"),
        ({"release": _ref(sha256="abc")}, "64 lowercase hex"),
        ({"image": "bad image; rm -rf /"}, "not an image reference"),
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"min_replicas": 3, "max_replicas": 2}, "min <= max"),
        ({"gpu_type": "Standard_$(reboot)"}, "GPU type"),
        ({"client_id": "not-a-guid"}, "GUID"),
        ({"entry_models": ("nope",)}, "not among the models"),
        ({"models": ("llm", "x y"), "entry_models": ("llm",)}, "model name"),
        ({"prometheus_url": "http://a b"}, "Prometheus URL"),
    ],
)
def test_hostile_options_are_one_line_errors(change, message):
    kw = {"release": _ref(), "image": IMAGE, **change}
    with pytest.raises(ManifestError, match=message) as info:
        kserve_manifests(KServeOptions(**kw))
    assert "\n" not in str(info.value)


# ---- KServe / Kubernetes: each validation can fail ------------------------------------


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        # a misspelled field (minReplica) in the InferenceService's predictor
        ("InferenceService", lambda o: o["spec"]["predictor"].update(minReplica=1),
         "'minReplica' was unexpected"),
        # a wrong type
        ("InferenceService", lambda o: o["spec"]["predictor"].update(minReplicas="one"),
         "is not of type 'integer'"),
        # an unknown field in the InferenceService spec itself
        ("InferenceService", lambda o: o["spec"].update(router={"x": 1}),
         "'router' was unexpected"),
        # an unknown top-level field
        ("ServingRuntime", lambda o: o.update(extra=1), "'extra' was unexpected"),
        # an enum: External metrics come from prometheus or graphite
        ("InferenceService",
         lambda o: o["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]
         .update(backend="datadog"), "is not one of"),
        # a core Deployment with a typo field
        ("Deployment", lambda o: o["spec"]["template"]["spec"].update(containerz=[]),
         "'containerz' was unexpected"),
        ("Service", lambda o: o["spec"].update(clusterIp="None"), "'clusterIp' was unexpected"),
        ("HorizontalPodAutoscaler", lambda o: o["spec"].update(maxReplicas="8"),
         "is not of type 'integer'"),
        # metadata the API server would refuse
        ("InferenceService", lambda o: o["metadata"].update(name="Bad_Name"), "DNS-1123"),
    ],
)  # fmt: skip
def test_each_validation_fails_on_a_broken_object(objects, kind, edit, message):
    obj = copy.deepcopy(_by_kind(objects, kind))
    edit(obj)
    with pytest.raises(ManifestError, match=message) as info:
        validate_object(obj)
    assert obj["kind"] in str(info.value)


def test_unknown_kinds_and_groups_are_errors_not_warnings(objects):
    with pytest.raises(ManifestError, match="Couldn't find schema"):
        validate_object({"apiVersion": "v1", "kind": "Sekret", "metadata": {"name": "x"}})
    with pytest.raises(ManifestError, match=r"no schema for keda\.sh/v1alpha1"):
        validate_object({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                         "metadata": {"name": "x"}})  # fmt: skip
    with pytest.raises(ManifestError, match=r"no apiVersion serving\.kserve\.io/v9"):
        validate_object({**_by_kind(objects, "InferenceService"),
                         "apiVersion": "serving.kserve.io/v9"})  # fmt: skip
    isvc = _by_kind(objects, "InferenceService")
    with pytest.raises(ManifestError, match="appears twice"):
        validate_manifests([isvc, isvc])


def test_strict_schema_keeps_open_maps_open_and_int_or_string():
    schema = strict_schema({
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"k": {"type": "string"}}},
            "q": {"x-kubernetes-int-or-string": True},
        },
    })  # fmt: skip
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["q"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_crds_ship_inside_the_package():
    from tritonkit.deploy.validate import KSERVE_CRDS, SCHEMAS

    for file in KSERVE_CRDS.values():
        assert (SCHEMAS / file).is_file()
    assert "aaac4e294dae2c7b1aa1886447793f3aa1c30912" in (SCHEMAS / "README.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"tritonkit.deploy" = ["schemas/kserve/*.yaml"' in pyproject


# ---- Azure ML -------------------------------------------------------------------------


def test_azureml_documents_load_in_azure_ai_ml():
    docs = azureml_documents(AzureMLOptions(_ref(), IMAGE, slot="green", previous_release=6))
    validate_azureml(docs)
    assert set(docs) == {"model-r7.yml", "model-r6.yml", "endpoint.yml",
                         "deployment-green.yml", "deployment-blue.yml"}  # fmt: skip
    assert docs["model-r7.yml"]["path"] == f"{ACCOUNT}/models/team/llm/releases/000007"
    assert docs["model-r7.yml"]["type"] == "custom_model"
    green = docs["deployment-green.yml"]
    assert green["model"] == "azureml:tritonkit-repository:7"
    assert green["environment"]["image"] == IMAGE
    routes = green["environment"]["inference_config"]
    assert routes["liveness_route"]["path"] == "/v2/health/live"
    assert routes["readiness_route"]["path"] == "/v2/health/ready"
    assert routes["scoring_route"]["path"] == "/v2/models/llm/generate"
    assert green["request_settings"]["request_timeout_ms"] <= 180000
    assert green["environment_variables"]["TRITONKIT_RELEASE_SHA256"] == SHA
    assert green["environment_variables"]["TRITON_ADMIN_KEY"] == (  # Azure ML secret injection
        "${{azureml://connections/tritonkit-triton-admin/credentials/admin-key}}"
    )
    assert docs["deployment-blue.yml"]["model"] == "azureml:tritonkit-repository:6"


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("deployment-blue.yml", lambda d: d["request_settings"].update(request_timeout_ms=200000),
         "at most 180000"),
        ("endpoint.yml", lambda d: d.update(name="1-starts-with-a-digit"), "endpoint name"),
        ("endpoint.yml", lambda d: d.update(name="x" * 33), "endpoint name"),
        ("deployment-blue.yml", lambda d: d.update(name="-blue"), "deployment name"),
        ("model-r7.yml", lambda d: d.update(type="triton_model"), "onnxruntime or tokenizers"),
        # what azure-ai-ml itself refuses
        ("deployment-blue.yml", lambda d: d.update(instance_typo="x"), "Unknown field"),
        ("deployment-blue.yml", lambda d: d.update(instance_count="many"), "Not a valid integer"),
        ("endpoint.yml", lambda d: d.update(auth_mode="password"), "azure-ai-ml refuses"),
    ],
)  # fmt: skip
def test_each_azureml_check_fails_on_a_broken_document(file, edit, message):
    docs = azureml_documents(AzureMLOptions(_ref(), IMAGE))
    edit(docs[file])
    with pytest.raises(ManifestError, match=message) as info:
        validate_azureml(docs)
    assert "\n" not in str(info.value)


def test_azureml_refuses_triton_model_and_long_timeouts_up_front():
    with pytest.raises(ManifestError, match="cannot import onnxruntime or tokenizers"):
        azureml_documents(AzureMLOptions(_ref(), IMAGE, model_type="triton_model"))
    with pytest.raises(ManifestError, match="at most 180000"):
        azureml_documents(AzureMLOptions(_ref(), IMAGE, request_timeout_ms=200000))
    with pytest.raises(ManifestError, match="endpoint name"):
        azureml_documents(AzureMLOptions(_ref(), IMAGE, endpoint="ab"))


# ---- the CLI --------------------------------------------------------------------------


def test_kserve_dry_run_prints_valid_yaml_and_no_secret(capsys):
    assert run([*KSERVE_ARGS, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    docs = [d for d in yaml.safe_load_all(out) if d]
    validate_manifests(docs)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/team/llm/releases/000007")
    assert not any(d["kind"] == "Secret" for d in docs)
    assert "openssl rand" not in out  # secret commands go to stderr, values never anywhere
    assert "kubectl create secret generic tritonkit-triton-admin" in err


def test_azureml_dry_run_prints_valid_yaml():
    # a separate process: the real entry point, stdout only
    proc = subprocess.run([sys.executable, "-m", "tritonkit", *AZUREML_ARGS, "--dry-run"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    names = ["model-r7.yml", "endpoint.yml", "deployment-blue.yml"]
    validate_azureml(dict(zip(names, docs)))
    assert "az ml online-deployment create" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "tritonkit", *AZUREML_ARGS, "--model-type",
                          "triton_model", "--dry-run"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "onnxruntime or tokenizers" in bad.stderr


def test_kserve_out_writes_a_kustomization_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "k8s"
    assert run([*KSERVE_ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"kubectl apply -k {out}" in printed
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in out.glob("*.yaml")
                                               if p.name != "kustomization.yaml")  # fmt: skip
    validate_manifests([yaml.safe_load((out / f).read_text()) for f in kust["resources"]])
    with pytest.raises(ManifestError.__mro__[1], match="not empty"):
        run([*KSERVE_ARGS, "--out", str(out)])
    assert run([*KSERVE_ARGS, "--out", str(out), "--force"]) == 0


def test_invalid_input_writes_nothing(tmp_path):
    out = tmp_path / "k8s"
    with pytest.raises(ManifestError, match="not https://ACCOUNT"):
        run([*KSERVE_ARGS[:-6], "--account-url", "https://x.example.com", "--image", IMAGE,
             "--out", str(out)])  # fmt: skip
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_deploy_over_ssh_still_needs_a_host():
    from tritonkit.errors import UsageError

    with pytest.raises(UsageError, match="needs --host"):
        run(["deploy", "--dry-run"])


def test_help_teaches_with_examples(capsys):
    for target in ("kserve", "azureml"):
        with pytest.raises(SystemExit):
            run(["deploy", target, "--help"])
        assert "examples:" in capsys.readouterr().out


# ---- the AKS script -------------------------------------------------------------------


@pytest.mark.skipif(
    not shutil.which("shellcheck"), reason="shellcheck missing: apt-get install shellcheck"
)
def test_create_cluster_script_passes_shellcheck_and_has_what_the_manifests_need(tmp_path):
    script = ROOT / "deploy" / "aks" / "create_cluster.sh"
    # -x follows the shared deploy/azure/storage.sh (paths are relative to the checkout)
    result = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True,
                            cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout
    broken = tmp_path / "broken.sh"
    broken.write_text(script.read_text().replace('"${CLUSTER}"', "$CLUSTER", 1))
    bad = subprocess.run(["shellcheck", "-x", str(broken)], capture_output=True, cwd=ROOT)
    assert bad.returncode != 0
    text = script.read_text()
    for needed in ("set -euo pipefail", "--enable-oidc-issuer", "--enable-workload-identity",
                   "--enable-keda", "sku=gpu:NoSchedule", "nvidia-device-plugin",
                   "cert-manager", "kserve.controller.deploymentMode=RawDeployment",
                   "kube-prometheus-stack", '"Storage Blob Data Reader"',
                   "az identity federated-credential create",
                   "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"):  # fmt: skip
        assert needed in text
    # Prometheus scrapes the gateway with its metrics key (its /metrics wants one), and
    # everything else annotated without: the two jobs split the pods by the component label.
    values = yaml.safe_load(text.split("<<'VALUES'\n", 1)[1].split("\nVALUES\n", 1)[0])
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["secrets"] == ["tritonkit-gateway-metrics-key"]
    jobs = {j["job_name"]: j for j in spec["additionalScrapeConfigs"]}
    gateway_job = jobs["tritonkit-gateway"]
    assert gateway_job["authorization"]["credentials_file"] == (
        "/etc/prometheus/secrets/tritonkit-gateway-metrics-key/metrics-key"
    )
    component = "__meta_kubernetes_pod_label_tritonkit_dev_component"

    def filters(job: dict) -> dict:
        rules = [r for r in job["relabel_configs"] if r.get("action") in ("keep", "drop")]
        return {(r["source_labels"][0], r["action"]): r.get("regex") for r in rules}

    assert filters(gateway_job)[(component, "keep")] == "gateway"
    assert filters(jobs["annotated-pods"])[(component, "drop")] == "gateway"
    assert "kubectl create secret generic tritonkit-gateway-metrics-key" in text


# ---- the engine picks the image ---------------------------------------------------------


def test_a_vllm_release_gets_the_vllm_image_and_no_decoder(tmp_path, capsys):
    """A release built with --engine vllm: its models (no decoder) and engine are read from
    the local repository, the manifests carry the engine, and an image tagged for the other
    engine is refused before anything is written."""
    from tritonkit.model_repository import config as cfg

    repo = tmp_path / "repo"
    for name, config in (
        ("llm", cfg.vllm_entry_config("llm", "gpu", max_batch_size=8, max_context=2048)),
        ("llm_sync", cfg.sync_config("llm_sync", "llm", 2, "gpu")),
    ):
        (repo / name).mkdir(parents=True)
        cfg.write(config, repo / name)
    vllm_image = "tkacr.azurecr.io/tritonkit-triton:26.08-vllm"
    args = [a if a != IMAGE else vllm_image for a in KSERVE_ARGS]
    assert run([*args, "--repository", str(repo), "--dry-run"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    validate_manifests(docs)
    runtime = next(d for d in docs if d["kind"] == "ServingRuntime")
    assert runtime["metadata"]["labels"]["tritonkit.dev/engine"] == "vllm"
    container = runtime["spec"]["containers"][0]
    assert container["image"] == vllm_image
    assert container["args"] == ["--load-model=llm_sync"]  # no decoder model to load
    # The same release with the onnxruntime image, or a contradicting --engine: refused.
    onnx_image = "tkacr.azurecr.io/tritonkit-triton:26.08-onnxruntime"
    with pytest.raises(ManifestError, match=r"is the onnxruntime image.*ENGINE=vllm"):
        kserve_manifests(KServeOptions(_ref(), onnx_image, engine="vllm",
                                       models=("llm", "llm_sync")))  # fmt: skip
    with pytest.raises(ManifestError, match="built with --engine vllm"):
        run([*args, "--repository", str(repo), "--engine", "onnxruntime", "--dry-run"])
    with pytest.raises(ManifestError, match="choose onnxruntime or vllm"):
        kserve_manifests(KServeOptions(_ref(), IMAGE, engine="trtllm"))
    # Without a repository, --engine vllm picks the demo's models of that engine.
    assert run([*args, "--engine", "vllm", "--dry-run"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    runtime = next(d for d in docs if d["kind"] == "ServingRuntime")
    assert "--load-model=llm_decoder" not in runtime["spec"]["containers"][0]["args"]
    aml = [a if a != IMAGE else vllm_image for a in AZUREML_ARGS]
    assert run([*aml, "--engine", "vllm", "--dry-run"]) == 0
    with pytest.raises(ManifestError, match="is the onnxruntime image"):
        run([a if a != IMAGE else onnx_image for a in AZUREML_ARGS] + ["--engine", "vllm"])
