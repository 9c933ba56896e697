# The Triton image for the GPU VM: NVIDIA's Triton Inference Server plus exactly what
# tritonkit's python-backend models import (numpy, onnxruntime-gpu, tokenizers), and
# tritonkit itself for the model-sync (`tritonkit pull`) and gateway services.
#
# The tag defaults to 24.10 = Triton 2.51, the server version the tests run locally.
ARG TRITON_TAG=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3

# Pinned: onnxruntime-gpu 1.20 runs on the CUDA 12 of the 24.x images; numpy<2 for
# tritonclient 2.51; tokenizers for the entry model.
RUN python3 -m pip install --no-cache-dir \
        "numpy==1.26.4" "onnxruntime-gpu==1.20.1" "tokenizers==0.21.0"

# tritonkit with the light extras only (no torch in the serving image).
COPY pyproject.toml README.md /opt/tritonkit/
COPY tritonkit /opt/tritonkit/tritonkit
COPY export /opt/tritonkit/export
COPY model_repository /opt/tritonkit/model_repository
COPY serve /opt/tritonkit/serve
COPY client /opt/tritonkit/client
COPY blob /opt/tritonkit/blob
COPY perf /opt/tritonkit/perf
COPY gateway /opt/tritonkit/gateway
COPY deploy /opt/tritonkit/deploy
RUN python3 -m pip install --no-cache-dir "/opt/tritonkit[azure,gateway]"

COPY deploy/triton-entrypoint.sh /usr/local/bin/triton-entrypoint.sh
RUN chmod 0755 /usr/local/bin/triton-entrypoint.sh \
    && useradd --create-home --uid 1001 tritonkit \
    && mkdir -p /models && chown tritonkit /models
USER tritonkit
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/triton-entrypoint.sh"]
