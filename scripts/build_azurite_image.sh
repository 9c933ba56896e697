#!/usr/bin/env bash
# Azurite's image for the compose `local` profile, without a registry (deploy/cpu/azurite.Dockerfile):
#   scripts/build_azurite_image.sh [IMAGE] [BASE]  (defaults tritonkit-azurite:latest, tritonkit-base:bookworm)
# apt runs inside the build with the host's network (--network host) for Node.js.
set -euo pipefail
# shellcheck source=scripts/require_docker.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/require_docker.sh"

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
image="${1:-tritonkit-azurite:latest}"
base="${2:-tritonkit-base:bookworm}"
if docker image inspect "${image}" >/dev/null 2>&1; then
  echo "${image} exists"
  exit 0
fi
bash "${here}/scripts/install_azurite.sh" >/dev/null
if [[ "${base}" == tritonkit-base:* ]]; then
  bash "${here}/scripts/build_base_image.sh" "${base}" >/dev/null
fi
docker build -q --network host -f "${here}/deploy/cpu/azurite.Dockerfile" \
  --build-arg "BASE=${base}" -t "${image}" "${here}/.tools/azurite" >/dev/null
echo "${image} built on ${base}"
