#!/usr/bin/env bash
# Starts tritonserver from environment variables (see .env.example); used by compose.yaml.
#   MODEL_REPOSITORY   /models/repository (pulled by model-sync) or as://ACCOUNT/CONTAINER/PREFIX
#   MODEL_NAME         the entry model to load (explicit model control)
#   TRITON_ADMIN_KEY   required: the header value that unlocks the restricted APIs below
#   GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_ROOT_CERT   enable gRPC TLS when set
#   GRPC_MAX_RESPONSE_POOL_SIZE   responses a gRPC stream may queue (Triton >= 24.11)
#   TRITONKIT_RELEASE_SHA256   when set, MODEL_REPOSITORY must be a downloaded release
#                      (`tritonkit release create`; KServe mounts it at /mnt/models, so set
#                      MODEL_REPOSITORY=/mnt/models) whose release.json has this SHA-256 and
#                      whose every file matches it: checked before Triton starts, else exit 65
#   TRITONKIT_MIN_DRIVER_FILE  the NVIDIA driver major the image's CUDA wants (the GPU
#                      image writes /etc/tritonkit/min-driver from tritonkit/versions.py):
#                      an older driver on the VM gets a warning naming both
#
# Locked down the way Triton's secure-deployment guide asks: every API the stack does not
# need from outside is restricted to callers holding the admin key, on HTTP and gRPC:
#   model-repository (load, unload, index: version switches), shared-memory, statistics,
#   trace, logging.
# Open: health, metadata, model-config (clients read the chat template from it) and
# inference. Send the key as HTTP header "admin-key" or gRPC metadata
# "triton-grpc-protocol-admin-key" (`tritonkit versions --server` reads $TRITON_ADMIN_KEY).
set -euo pipefail

RESTRICTED_APIS="model-repository,shared-memory,statistics,trace,logging"

if [[ -z "${TRITON_ADMIN_KEY:-}" ]]; then
  echo "triton-entrypoint: set TRITON_ADMIN_KEY (a long random value, e.g. openssl rand -hex 32):" \
       "it locks the model-repository, shared-memory, statistics, trace and logging APIs" >&2
  exit 64
fi
if [[ "${TRITON_ADMIN_KEY}" == *"\${{"* || "${#TRITON_ADMIN_KEY}" -lt 16 ]]; then
  # an unexpanded placeholder (e.g. Azure ML secret injection that did not happen) or a
  # key anyone could guess would lock the APIs with a value that is not secret
  echo "triton-entrypoint: TRITON_ADMIN_KEY is a placeholder or shorter than 16 characters;" \
       "give it a long random value (openssl rand -hex 32)" >&2
  exit 64
fi

# The image's CUDA wants a driver at least this new. Data-center GPUs may still run it
# on an older long-term driver through the CUDA forward-compatibility libraries NGC images
# carry, so this warns (naming both) instead of refusing; a CUDA provider that then
# cannot start fails the model's load with its own message.
min_driver_file="${TRITONKIT_MIN_DRIVER_FILE:-/etc/tritonkit/min-driver}"
if [[ -r "${min_driver_file}" ]] && command -v nvidia-smi >/dev/null 2>&1; then
  min_driver="$(tr -dc '0-9' < "${min_driver_file}")"
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
  major="${driver%%.*}"
  if [[ "${major}" =~ ^[0-9]+$ && -n "${min_driver}" && "${major}" -lt "${min_driver}" ]]; then
    echo "triton-entrypoint: warning: the VM's NVIDIA driver is ${driver} and this image's" \
         "CUDA wants R${min_driver} or newer: it runs only through CUDA forward" \
         "compatibility (data-center GPUs); update the driver if the model fails to load" >&2
  fi
fi

repository="${MODEL_REPOSITORY:-/models/repository}"
model="${MODEL_NAME:-llm}"

if [[ -n "${TRITONKIT_RELEASE_SHA256:-}" ]]; then
  if [[ "${repository}" == *://* ]]; then
    echo "triton-entrypoint: TRITONKIT_RELEASE_SHA256 checks a downloaded release folder;" \
         "MODEL_REPOSITORY is ${repository}" >&2
    exit 65
  fi
  if ! tritonkit release verify "${repository}" --sha256 "${TRITONKIT_RELEASE_SHA256}"; then
    echo "triton-entrypoint: ${repository} is not the release pinned by" \
         "TRITONKIT_RELEASE_SHA256; not starting Triton" >&2
    exit 65
  fi
fi
# The image serves one engine's entry models (/etc/tritonkit/engine, written by the
# Dockerfile from its ENGINE): a repository built for the other engine is refused here,
# with what to do, instead of failing inside Triton's load with an import error.
engine_file="${TRITONKIT_ENGINE_FILE:-/etc/tritonkit/engine}"
if [[ -r "${engine_file}" && "${repository}" != *://* ]]; then
  image_engine="$(tr -dc '[:lower:]' < "${engine_file}")"
  if ! wanted="$(tritonkit repo engine "${repository}" --model "${model}")"; then
    echo "triton-entrypoint: cannot read the entry model ${model} in ${repository}" \
         "(see above); not starting Triton" >&2
    exit 66
  fi
  if [[ "${wanted}" != "${image_engine}" ]]; then
    echo "triton-entrypoint: ${model} in ${repository} was built with --engine ${wanted}" \
         "and this image serves --engine ${image_engine}: set TRITONKIT_ENGINE=${wanted} in" \
         ".env and rebuild (docker compose build), or pass --engine to tritonkit deploy" >&2
    exit 66
  fi
fi
args=(
  --model-repository="${repository}"
  --model-control-mode=explicit
  --load-model="${model}"
  --exit-timeout-secs="${EXIT_TIMEOUT_SECS:-30}"
  --log-verbose="${LOG_VERBOSE:-0}"
  --http-restricted-api="${RESTRICTED_APIS}:admin-key=${TRITON_ADMIN_KEY}"
  --grpc-restricted-protocol="${RESTRICTED_APIS}:admin-key=${TRITON_ADMIN_KEY}"
)
# A decoupled stream whose client reads slowly queues responses without bound unless the
# server caps it; the flag exists from Triton 24.11 (the 24.10 default image lacks it).
if tritonserver --help 2>&1 | grep -q -- '--grpc-max-response-pool-size'; then
  args+=(--grpc-max-response-pool-size="${GRPC_MAX_RESPONSE_POOL_SIZE:-512}")
fi
if [[ -n "${GRPC_TLS_CERT:-}" && -n "${GRPC_TLS_KEY:-}" ]]; then
  args+=(--grpc-use-ssl=true --grpc-server-cert="${GRPC_TLS_CERT}" --grpc-server-key="${GRPC_TLS_KEY}")
  if [[ -n "${GRPC_TLS_ROOT_CERT:-}" ]]; then
    args+=(--grpc-use-ssl-mutual=true --grpc-root-cert="${GRPC_TLS_ROOT_CERT}")
  fi
fi
exec tritonserver "${args[@]}" "$@"
