#!/usr/bin/env bash
# Starts tritonserver from environment variables (see .env.example); used by compose.yaml.
#   MODEL_REPOSITORY   /models (pulled by model-sync) or as://ACCOUNT/CONTAINER/PREFIX
#   MODEL_NAME         the entry model to load (explicit model control)
#   TRITON_ADMIN_KEY   required header value for the model-repository API (load/unload)
#   GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_ROOT_CERT   enable gRPC TLS when set
set -euo pipefail

repository="${MODEL_REPOSITORY:-/models}"
model="${MODEL_NAME:-llm}"
args=(
  --model-repository="${repository}"
  --model-control-mode=explicit
  --load-model="${model}"
  --exit-timeout-secs="${EXIT_TIMEOUT_SECS:-30}"
  --log-verbose="${LOG_VERBOSE:-0}"
)
if [[ -n "${TRITON_ADMIN_KEY:-}" ]]; then
  # Only callers with the header may load, unload or index models (version switches):
  # HTTP header "admin-key", gRPC metadata "triton-grpc-protocol-admin-key".
  args+=(
    --http-restricted-api="model-repository:admin-key=${TRITON_ADMIN_KEY}"
    --grpc-restricted-protocol="model-repository:admin-key=${TRITON_ADMIN_KEY}"
  )
fi
if [[ -n "${GRPC_TLS_CERT:-}" && -n "${GRPC_TLS_KEY:-}" ]]; then
  args+=(--grpc-use-ssl=true --grpc-server-cert="${GRPC_TLS_CERT}" --grpc-server-key="${GRPC_TLS_KEY}")
  if [[ -n "${GRPC_TLS_ROOT_CERT:-}" ]]; then
    args+=(--grpc-use-ssl-mutual=true --grpc-root-cert="${GRPC_TLS_ROOT_CERT}")
  fi
fi
exec tritonserver "${args[@]}" "$@"
