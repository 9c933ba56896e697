#!/usr/bin/env bash
# Sourced by create_vm.sh and ../aks/create_cluster.sh: the storage account and private
# container that hold model repositories and releases, with shared-key access disabled.
# No account keys: everything authenticates with Entra ID (your az login to publish, a
# managed identity to read), so no key exists that could read or write the account.
# Sets storage_id (the account's resource id) for the caller's role assignments.

# create_private_storage RESOURCE_GROUP LOCATION ACCOUNT CONTAINER
create_private_storage() {
  local group="$1" location="$2" account="$3" container="$4" me
  if ! az storage account show --name "${account}" --resource-group "${group}" \
      --output none 2>/dev/null; then
    az storage account create --name "${account}" --resource-group "${group}" \
      --location "${location}" --sku Standard_LRS --kind StorageV2 \
      --min-tls-version TLS1_2 --allow-blob-public-access false \
      --allow-shared-key-access false --output none
  fi
  storage_id="$(az storage account show --name "${account}" --resource-group "${group}" \
    --query id --output tsv)"
  # You publish with your az login: data-plane rights on the account (keys are disabled).
  me="$(az ad signed-in-user show --query id --output tsv)"
  az role assignment create --assignee-object-id "${me}" --assignee-principal-type User \
    --role "Storage Blob Data Contributor" --scope "${storage_id}" --output none
  az storage container create --name "${container}" --account-name "${account}" \
    --auth-mode login --output none
}
