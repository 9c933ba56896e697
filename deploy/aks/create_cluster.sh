#!/usr/bin/env bash
# Creates an AKS cluster that `tritonkit deploy kserve` manifests run on, from an empty
# subscription (or next to deploy/azure/create_vm.sh's storage account):
#   a resource group; a storage account and private container for releases (keys off);
#   a container registry with tritonkit's Triton image built in Azure (az acr build);
#   AKS with the OIDC issuer, workload identity and the KEDA add-on; a GPU node pool
#   tainted sku=gpu:NoSchedule (only pods that tolerate it land there);
#   the NVIDIA device plugin, cert-manager, KServe (RawDeployment, pinned), and Prometheus
#   scraping pods annotated prometheus.io/scrape (KEDA's trigger reads it);
#   a managed identity with Storage Blob Data Reader on the container, federated to the
#   predictor pods' ServiceAccount (no storage key anywhere).
# Needs: az (logged in: `az login`), kubectl, helm. Re-running it skips what exists.
# Usage: RESOURCE_GROUP=tritonkit-aks LOCATION=westeurope ./deploy/aks/create_cluster.sh
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-tritonkit-aks}"
LOCATION="${LOCATION:-westeurope}"
CLUSTER="${CLUSTER:-tritonkit}"
SYSTEM_VM_SIZE="${SYSTEM_VM_SIZE:-Standard_D4s_v5}"
GPU_POOL="${GPU_POOL:-gpu}"
GPU_VM_SIZE="${GPU_VM_SIZE:-Standard_NC24ads_A100_v4}"  # 1x A100 80GB; Standard_NC4as_T4_v3: 1x T4
# RELEASE_RETENTION_DAYS=365 makes every blob version WORM for that long (storage.sh)
GPU_MIN="${GPU_MIN:-1}"
GPU_MAX="${GPU_MAX:-4}"                                  # the pool's autoscaler bound
STORAGE_ACCOUNT="${STORAGE_ACCOUNT:-tritonkit$RANDOM$RANDOM}"  # globally unique, 3-24 lowercase
CONTAINER="${CONTAINER:-models}"
ACR="${ACR:-tritonkitacr$RANDOM}"                        # globally unique, 5-50 alphanumerics
IMAGE_TAG="${IMAGE_TAG:-26.08}"
ENGINE="${ENGINE:-onnxruntime}"   # the releases' engine (repo build --engine): onnxruntime or vllm
IDENTITY="${IDENTITY:-tritonkit-model-reader}"
NAMESPACE="${NAMESPACE:-tritonkit}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-tritonkit-triton}"   # tritonkit deploy kserve's NAME-triton
# Pinned versions: the KServe CRDs in deploy/schemas/kserve/ must match the KServe installed.
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.15.2}"
DEVICE_PLUGIN_VERSION="${DEVICE_PLUGIN_VERSION:-0.17.0}"
PROMETHEUS_CHART_VERSION="${PROMETHEUS_CHART_VERSION:-66.3.1}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"

step() { printf '\n==> %s\n' "$*"; }

step "resource group ${RESOURCE_GROUP} in ${LOCATION}"
az group create --name "${RESOURCE_GROUP}" --location "${LOCATION}" --output none

step "storage account ${STORAGE_ACCOUNT} and private container ${CONTAINER} (no shared keys)"
# shellcheck source=deploy/azure/storage.sh
source "${ROOT}/deploy/azure/storage.sh"
create_private_storage "${RESOURCE_GROUP}" "${LOCATION}" "${STORAGE_ACCOUNT}" "${CONTAINER}"

step "container registry ${ACR}; tritonkit's Triton image built in Azure (no local Docker)"
if ! az acr show --name "${ACR}" --resource-group "${RESOURCE_GROUP}" --output none 2>/dev/null; then
  az acr create --name "${ACR}" --resource-group "${RESOURCE_GROUP}" --sku Standard --output none
fi
az acr build --registry "${ACR}" --image "tritonkit-triton:${IMAGE_TAG}-${ENGINE}" \
  --build-arg "TRITON_TAG=${IMAGE_TAG}" --build-arg "ENGINE=${ENGINE}" \
  --file "${ROOT}/Dockerfile" "${ROOT}"

step "AKS cluster ${CLUSTER}: OIDC issuer, workload identity, KEDA add-on"
if ! az aks show --name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" --output none 2>/dev/null; then
  az aks create --name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" --location "${LOCATION}" \
    --node-count 2 --node-vm-size "${SYSTEM_VM_SIZE}" \
    --enable-oidc-issuer --enable-workload-identity --enable-keda \
    --attach-acr "${ACR}" --generate-ssh-keys --output none
fi
az aks get-credentials --name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" --overwrite-existing

step "GPU node pool ${GPU_POOL} (${GPU_VM_SIZE}), tainted sku=gpu:NoSchedule"
if ! az aks nodepool show --cluster-name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" \
    --name "${GPU_POOL}" --output none 2>/dev/null; then
  az aks nodepool add --cluster-name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" \
    --name "${GPU_POOL}" --node-vm-size "${GPU_VM_SIZE}" --node-taints sku=gpu:NoSchedule \
    --enable-cluster-autoscaler --min-count "${GPU_MIN}" --max-count "${GPU_MAX}" \
    --node-count "${GPU_MIN}" --output none
fi

step "NVIDIA device plugin ${DEVICE_PLUGIN_VERSION} (tolerates the GPU taint)"
helm repo add nvdp https://nvidia.github.io/k8s-device-plugin --force-update >/dev/null
helm upgrade --install nvdp nvdp/nvidia-device-plugin --namespace nvidia-device-plugin \
  --create-namespace --version "${DEVICE_PLUGIN_VERSION}" \
  --set-json 'tolerations=[{"key":"sku","operator":"Equal","value":"gpu","effect":"NoSchedule"},{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]' \
  --set-json "nodeSelector={\"kubernetes.azure.com/agentpool\":\"${GPU_POOL}\"}"

step "cert-manager ${CERT_MANAGER_VERSION} (KServe's webhooks need it)"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl wait --namespace cert-manager --for=condition=Available deployment --all --timeout=300s

step "KServe ${KSERVE_VERSION}, RawDeployment by default (plain Deployments, no Knative)"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "${KSERVE_VERSION}" --namespace kserve --create-namespace
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve \
  --version "${KSERVE_VERSION}" --namespace kserve \
  --set kserve.controller.deploymentMode=RawDeployment \
  --set kserve.controller.gateway.disableIngressCreation=true

step "the gateway's /metrics key, in ${NAMESPACE} and for Prometheus in monitoring"
# The gateway's /metrics lists replica addresses and wants this key; Prometheus scrapes
# it with the same key (below). Made once; an existing key is kept.
kubectl create namespace "${NAMESPACE}" --dry-run=client --output yaml | kubectl apply -f - >/dev/null
kubectl create namespace monitoring --dry-run=client --output yaml | kubectl apply -f - >/dev/null
if ! kubectl get secret tritonkit-gateway-metrics-key --namespace monitoring >/dev/null 2>&1; then
  metrics_key="$(openssl rand -hex 32)"
  for ns in monitoring "${NAMESPACE}"; do
    kubectl create secret generic tritonkit-gateway-metrics-key --namespace "${ns}" \
      --from-literal=metrics-key="${metrics_key}" >/dev/null
  done
  unset metrics_key
fi

step "Prometheus (kube-prometheus-stack ${PROMETHEUS_CHART_VERSION}) scraping annotated pods"
values="$(mktemp)"
trap 'rm -f "${values}"' EXIT
cat >"${values}" <<'VALUES'
grafana:
  enabled: false
alertmanager:
  enabled: false
prometheus:
  prometheusSpec:
    # mounted at /etc/prometheus/secrets/tritonkit-gateway-metrics-key/metrics-key
    secrets: [tritonkit-gateway-metrics-key]
    additionalScrapeConfigs:
      - job_name: annotated-pods
        kubernetes_sd_configs: [{role: pod}]
        relabel_configs:
          - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
          - {source_labels: [__meta_kubernetes_pod_label_tritonkit_dev_component], action: drop, regex: gateway}
          - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], action: replace, target_label: __metrics_path__, regex: (.+)}
          - {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], action: replace, regex: '([^:]+)(?::\d+)?;(\d+)', replacement: '$1:$2', target_label: __address__}
          - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
          - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      # The gateway's /metrics wants its key (it lists replica addresses).
      - job_name: tritonkit-gateway
        kubernetes_sd_configs: [{role: pod}]
        authorization:
          type: Bearer
          credentials_file: /etc/prometheus/secrets/tritonkit-gateway-metrics-key/metrics-key
        relabel_configs:
          - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
          - {source_labels: [__meta_kubernetes_pod_label_tritonkit_dev_component], action: keep, regex: gateway}
          - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], action: replace, target_label: __metrics_path__, regex: (.+)}
          - {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], action: replace, regex: '([^:]+)(?::\d+)?;(\d+)', replacement: '$1:$2', target_label: __address__}
          - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
          - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
VALUES
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts \
  --force-update >/dev/null
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --namespace monitoring --create-namespace --version "${PROMETHEUS_CHART_VERSION}" \
  --values "${values}"

step "managed identity ${IDENTITY}: Storage Blob Data Reader, federated to ${NAMESPACE}/${SERVICE_ACCOUNT}"
az identity create --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" --output none
principal_id="$(az identity show --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" \
  --query principalId --output tsv)"
client_id="$(az identity show --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" \
  --query clientId --output tsv)"
az role assignment create --assignee-object-id "${principal_id}" \
  --assignee-principal-type ServicePrincipal --role "Storage Blob Data Reader" \
  --scope "${storage_id}/blobServices/default/containers/${CONTAINER}" --output none
issuer="$(az aks show --name "${CLUSTER}" --resource-group "${RESOURCE_GROUP}" \
  --query oidcIssuerProfile.issuerUrl --output tsv)"
az identity federated-credential create --name "tritonkit-${CLUSTER}" \
  --identity-name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" --issuer "${issuer}" \
  --subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}" \
  --audience api://AzureADTokenExchange --output none

cat <<NEXT

done. Next (see README, "Beyond one VM"):
  tritonkit publish out/model_repository --container ${CONTAINER} \\
      --account-url https://${STORAGE_ACCOUNT}.blob.core.windows.net
  tritonkit release create --container ${CONTAINER} \\
      --account-url https://${STORAGE_ACCOUNT}.blob.core.windows.net   # prints R and its SHA-256
  tritonkit deploy kserve --release R --release-sha256 HEX --container ${CONTAINER} \\
      --account-url https://${STORAGE_ACCOUNT}.blob.core.windows.net \\
      --image ${ACR}.azurecr.io/tritonkit-triton:${IMAGE_TAG}-${ENGINE} --namespace ${NAMESPACE} \\
      --gpu-type ${GPU_VM_SIZE} --client-id ${client_id} --out out/k8s
  then the kubectl commands it prints (secrets, kubectl apply -k out/k8s)
NEXT
