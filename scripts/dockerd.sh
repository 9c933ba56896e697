#!/usr/bin/env bash
# A Docker engine of our own, for the stack's real runs on a machine without one running:
#   scripts/dockerd.sh start   # prints: export DOCKER_HOST=unix://...
#   scripts/dockerd.sh stop
# Its images live under ${TRITONKIT_CACHE:-~/.cache/tritonkit}/docker, so a later run reuses
# them; it never touches another engine (own socket, pidfile, exec root, bridge).
set -euo pipefail

cache="${TRITONKIT_CACHE:-${HOME}/.cache/tritonkit}/docker"
run="/tmp/tritonkit-docker-$(id -u)"
socket="${run}/docker.sock"
pidfile="${run}/docker.pid"

case "${1:-}" in
  start)
    if [[ -S "${socket}" ]] && DOCKER_HOST="unix://${socket}" docker info >/dev/null 2>&1; then
      echo "export DOCKER_HOST=unix://${socket}"
      exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd.sh: install docker.io (apt)" >&2; exit 69; }
    mkdir -p "${cache}" "${run}"
    dockerd --data-root "${cache}/data" --exec-root "${run}/exec" --pidfile "${pidfile}" \
      -H "unix://${socket}" --bridge none --iptables=false >"${run}/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      if DOCKER_HOST="unix://${socket}" docker info >/dev/null 2>&1; then
        echo "export DOCKER_HOST=unix://${socket}"
        exit 0
      fi
      sleep 0.5
    done
    echo "dockerd.sh: the engine did not start; see ${run}/dockerd.log" >&2
    exit 1
    ;;
  stop)
    if [[ -f "${pidfile}" ]]; then
      kill "$(cat "${pidfile}")" 2>/dev/null || true
      for _ in $(seq 1 40); do [[ -f "${pidfile}" ]] || break; sleep 0.25; done
    fi
    ;;
  *)
    echo "usage: scripts/dockerd.sh start|stop" >&2
    exit 64
    ;;
esac
