#!/usr/bin/env bash
# Static checkers for the deployment files (compose.yaml, cloud-init, shell scripts):
# Debian's docker-compose (validates compose files without an engine), shellcheck, cloud-init;
# and what the stack's real runs need (tests/test_stack.py): a Docker engine and CLI
# (docker.io), debootstrap (a base image without a registry), an sshd (deploy over SSH).
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v cloud-init >/dev/null || missing+=(cloud-init)
{ command -v dockerd >/dev/null && command -v docker >/dev/null; } || missing+=(docker.io)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (apt)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Compose v2 (`docker compose`, what `tritonkit deploy` and the stack tests run): Debian 12
# ships only v1, so take Debian 13's docker-compose package from the same mirror, with a
# private apt list (the system's lists are not touched), into ~/.docker/cli-plugins.
if command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1; then
  mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  work="$(mktemp -d)"
  mkdir -p "${work}/lists/partial" "${work}/dl"
  echo "deb ${mirror} trixie main" > "${work}/sources.list"
  opts=(-q -o "Dir::Etc::sourcelist=${work}/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=${work}/lists" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update >/dev/null
  (cd "${work}/dl" && apt-get "${opts[@]}" download docker-compose >/dev/null 2>&1)
  dpkg -x "${work}"/dl/docker-compose_*.deb "${work}/x"
  mkdir -p "${HOME}/.docker/cli-plugins"
  install -m 0755 "${work}/x/usr/libexec/docker/cli-plugins/docker-compose" \
    "${HOME}/.docker/cli-plugins/docker-compose"
  rm -rf "${work}"
  echo "installed compose v2: $(docker compose version)"
fi
