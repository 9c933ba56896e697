#!/usr/bin/env bash
# The base image of tritonkit's CPU stack, made where no registry is reachable:
# debootstrap a minimal Debian bookworm (Python 3.11 and what the server needs) from the
# Debian mirror this machine's apt already uses, and `docker import` it.
#   scripts/build_base_image.sh [IMAGE]      (default tritonkit-base:bookworm)
# Where Docker Hub is reachable, `docker pull debian:bookworm-slim` is the same thing;
# deploy/cpu.Dockerfile takes either as BASE.
set -euo pipefail
# shellcheck source=scripts/require_docker.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/require_docker.sh"

image="${1:-tritonkit-base:bookworm}"
if docker image inspect "${image}" >/dev/null 2>&1; then
  echo "${image} exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "build_base_image.sh: apt-get install debootstrap" >&2; exit 69; }
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d /tmp/tritonkit-rootfs-XXXXXX)"
trap 'rm -rf "${rootfs}"' EXIT
# python3.11 + libpython3.11 (the python backend's stub links it), certificates, curl for
# healthchecks, tini as PID 1.
debootstrap --variant=minbase \
  --include=python3,python3-venv,libpython3.11,ca-certificates,curl,tini \
  bookworm "${rootfs}" "${mirror}" >"${rootfs}.log" 2>&1 \
  || { tail -5 "${rootfs}.log" >&2; exit 1; }
rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/lib/apt/lists/"*
tar -C "${rootfs}" -c . | docker import -c 'CMD ["/bin/bash"]' - "${image}" >/dev/null
rm -f "${rootfs}.log"
echo "${image} built from ${mirror}"
