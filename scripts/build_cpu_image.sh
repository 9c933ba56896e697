#!/usr/bin/env bash
# Build tritonkit's CPU image (deploy/cpu.Dockerfile) with the engine in $DOCKER_HOST:
#   scripts/build_cpu_image.sh [IMAGE] [BASE]   (defaults tritonkit-cpu:latest, tritonkit-base:bookworm)
# and the client image (target `client`: the base install only) as $TRITONKIT_CLIENT_IMAGE
# (default tritonkit-client:latest).
# The wheels (tritonkit from this checkout and its serve, azure and gateway dependencies)
# are downloaded here with this machine's pip settings and copied in, so the build needs
# no registry; the base image comes from scripts/build_base_image.sh unless BASE is given.
set -euo pipefail
# shellcheck source=scripts/require_docker.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/require_docker.sh"

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
image="${1:-tritonkit-cpu:latest}"
base="${2:-tritonkit-base:bookworm}"
python="${PYTHON:-${here}/.venv/bin/python}"

if [[ "${base}" == tritonkit-base:* ]]; then
  bash "${here}/scripts/build_base_image.sh" "${base}"
fi
context="$(mktemp -d /tmp/tritonkit-cpu-context-XXXXXX)"
trap 'rm -rf "${context}"' EXIT
wheels="${context}/wheelhouse"
mkdir -p "${wheels}/deps" "${wheels}/tritonkit" "${context}/deploy/cpu"
"${python}" -m pip wheel -q --no-deps -w "${wheels}/tritonkit" "${here}" >/dev/null 2>&1
wheel="$(ls "${wheels}"/tritonkit/tritonkit-*.whl)"
# The CPU image runs the GPU image's onnxruntime version (tritonkit/versions.py), so the
# CPU stack's tests load every graph with the onnxruntime a GPU VM will have.
"${python}" "${here}/tritonkit/versions.py" requirements cpu > "${context}/constraints.txt"
"${python}" -m pip download -q -d "${wheels}/deps" -c "${context}/constraints.txt" \
  "${wheel}[serve,azure,gateway]"
rm -f "${wheels}"/deps/tritonkit-*.whl
"${python}" "${here}/scripts/image_requirements.py" "${wheel}" "${wheels}"
cp "${here}/deploy/triton-entrypoint.sh" "${context}/deploy/"
cp "${here}/deploy/cpu/install_tritonserver.py" "${context}/deploy/cpu/"
client="${TRITONKIT_CLIENT_IMAGE:-tritonkit-client:latest}"
for target in client-deps cpu-deps; do  # tagged, so only replaced ones dangle
  docker build -q -f "${here}/deploy/cpu.Dockerfile" --build-arg "BASE=${base}" \
    --target "${target}" -t "tritonkit-${target}:latest" "${context}" >/dev/null
done
docker build -q -f "${here}/deploy/cpu.Dockerfile" --build-arg "BASE=${base}" -t "${image}" \
  "${context}" >/dev/null
docker build -q -f "${here}/deploy/cpu.Dockerfile" --build-arg "BASE=${base}" --target client \
  -t "${client}" "${context}" >/dev/null
# The images these tags held before are dangling now, a gigabyte each: remove ours only
# (by label; one a container still uses stays).
docker image prune -f --filter label=dev.tritonkit.image >/dev/null
echo "${image} and ${client} built on ${base}"
