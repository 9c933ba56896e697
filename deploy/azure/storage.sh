#!/usr/bin/env bash
# Sourced by create_vm.sh and ../aks/create_cluster.sh: the storage account and private
# container that hold model repositories and releases, with shared-key access disabled.
# No account keys: everything authenticates with Entra ID (your az login to publish, a
# managed identity to read), so no key exists that could read or write the account.
# Sets storage_id (the account's resource id) for the caller's role assignments.
#
# RELEASE_RETENTION_DAYS (optional, e.g. 365): make written blob versions WORM. Blob
# versioning is turned on and the container gets version-level immutability with a
# default time-based retention: every blob version written (releases/R/ files above all)
# can be neither changed nor deleted for that many days; an overwrite (a live-version
# switch) makes a new version and keeps the old one. Releases are otherwise immutable by
# convention only (and every pod checks its release's SHA-256 before serving). The policy
# starts Unlocked (it can still be shortened or removed); lock it once you are sure:
#   az storage container immutability-policy lock ... (see the README, "Releases")

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
  if [[ -n "${RELEASE_RETENTION_DAYS:-}" ]]; then
    az storage account blob-service-properties update --account-name "${account}" \
      --resource-group "${group}" --enable-versioning true --output none
    az storage container-rm create --name "${container}" --storage-account "${account}" \
      --resource-group "${group}" --enable-vlw --output none
    az storage container immutability-policy create --container-name "${container}" \
      --account-name "${account}" --resource-group "${group}" \
      --period "${RELEASE_RETENTION_DAYS}" --allow-protected-append-writes false \
      --output none
  else
    az storage container create --name "${container}" --account-name "${account}" \
      --auth-mode login --output none
  fi
}
