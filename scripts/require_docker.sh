# Sourced by the image scripts: stop with one line when no Docker engine answers.
# shellcheck shell=bash
if ! docker info >/dev/null 2>&1; then
  echo "$(basename "$0"): no Docker engine at ${DOCKER_HOST:-the default socket}; start one: eval \"\$(scripts/dockerd.sh start)\"" >&2
  exit 69
fi
