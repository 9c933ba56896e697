#!/usr/bin/env bash
# Static checkers for the deployment files (compose.yaml, cloud-init, shell scripts):
# Debian's docker-compose (validates compose files without an engine), shellcheck, cloud-init.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v cloud-init >/dev/null || missing+=(cloud-init)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (apt)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
