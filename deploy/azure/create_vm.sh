#!/usr/bin/env bash
# Creates everything tritonkit needs in an empty Azure subscription:
#   a resource group; a storage account and a private container for model repositories;
#   a user-assigned managed identity with read access to that container;
#   an N-series GPU VM (Ubuntu 22.04) with the NVIDIA driver extension, and Docker plus the
#   NVIDIA container toolkit from cloud-init.yaml; one inbound rule for the gateway port,
#   open to your current IP only.
# Needs: az (logged in: `az login`), an SSH public key.
# Usage: RESOURCE_GROUP=tritonkit-rg LOCATION=westeurope ./deploy/azure/create_vm.sh
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-tritonkit-rg}"
LOCATION="${LOCATION:-westeurope}"
VM_NAME="${VM_NAME:-tritonkit-gpu}"
VM_SIZE="${VM_SIZE:-Standard_NC4as_T4_v3}"      # 1x T4; Standard_NC24ads_A100_v4 for an A100
# RELEASE_RETENTION_DAYS=365 makes every blob version WORM for that long (storage.sh)
ADMIN_USER="${ADMIN_USER:-azureuser}"
SSH_KEY="${SSH_KEY:-$HOME/.ssh/id_rsa.pub}"
STORAGE_ACCOUNT="${STORAGE_ACCOUNT:-tritonkit$RANDOM$RANDOM}"  # globally unique, 3-24 lowercase
CONTAINER="${CONTAINER:-models}"
IDENTITY="${IDENTITY:-tritonkit-model-reader}"
GATEWAY_PORT="${GATEWAY_PORT:-9000}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

step() { printf '\n==> %s\n' "$*"; }

step "resource group ${RESOURCE_GROUP} in ${LOCATION}"
az group create --name "${RESOURCE_GROUP}" --location "${LOCATION}" --output none

step "storage account ${STORAGE_ACCOUNT} and private container ${CONTAINER}"
# shellcheck source=deploy/azure/storage.sh
source "${HERE}/storage.sh"
create_private_storage "${RESOURCE_GROUP}" "${LOCATION}" "${STORAGE_ACCOUNT}" "${CONTAINER}"

step "managed identity ${IDENTITY} with read access to the container"
az identity create --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" --output none
identity_id="$(az identity show --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" \
  --query id --output tsv)"
principal_id="$(az identity show --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" \
  --query principalId --output tsv)"
client_id="$(az identity show --name "${IDENTITY}" --resource-group "${RESOURCE_GROUP}" \
  --query clientId --output tsv)"
az role assignment create --assignee-object-id "${principal_id}" \
  --assignee-principal-type ServicePrincipal --role "Storage Blob Data Reader" \
  --scope "${storage_id}/blobServices/default/containers/${CONTAINER}" --output none

step "GPU VM ${VM_NAME} (${VM_SIZE})"
az vm create --name "${VM_NAME}" --resource-group "${RESOURCE_GROUP}" --location "${LOCATION}" \
  --image Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest --size "${VM_SIZE}" \
  --admin-username "${ADMIN_USER}" --ssh-key-values "${SSH_KEY}" \
  --os-disk-size-gb 128 --public-ip-sku Standard \
  --assign-identity "${identity_id}" --custom-data "${HERE}/cloud-init.yaml" --output none

step "NVIDIA GPU driver extension"
az vm extension set --vm-name "${VM_NAME}" --resource-group "${RESOURCE_GROUP}" \
  --name NvidiaGpuDriverLinux --publisher Microsoft.HpcCompute --output none

step "gateway port ${GATEWAY_PORT}, open to this machine's address only"
my_ip="$(curl -fsS https://api.ipify.org)"
nsg="$(az network nsg list --resource-group "${RESOURCE_GROUP}" --query '[0].name' --output tsv)"
az network nsg rule create --resource-group "${RESOURCE_GROUP}" --nsg-name "${nsg}" \
  --name tritonkit-gateway --priority 1010 --access Allow --protocol Tcp --direction Inbound \
  --source-address-prefixes "${my_ip}/32" --destination-port-ranges "${GATEWAY_PORT}" --output none

ip="$(az vm show --show-details --name "${VM_NAME}" --resource-group "${RESOURCE_GROUP}" \
  --query publicIps --output tsv)"
cat <<NEXT

done. Put these in .env (see .env.example):
  AZURE_CONTAINER=${CONTAINER}
  AZURE_STORAGE_ACCOUNT=${STORAGE_ACCOUNT}
  AZURE_STORAGE_ACCOUNT_URL=https://${STORAGE_ACCOUNT}.blob.core.windows.net
  AZURE_CLIENT_ID=${client_id}
next:
  tritonkit publish out/repo --container ${CONTAINER} --account-url https://${STORAGE_ACCOUNT}.blob.core.windows.net --credential default
  tritonkit deploy --host ${ADMIN_USER}@${ip}
  tritonkit generate "Hello" --url ${ip}:${GATEWAY_PORT} ... (or through an SSH tunnel to 8001)
NEXT
