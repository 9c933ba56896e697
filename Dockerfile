# The Triton image for the GPU VM: NVIDIA's Triton Inference Server plus exactly what
# tritonkit's python-backend models import, and tritonkit itself for the model-sync
# (`tritonkit pull`), probe and gateway services. ENGINE picks the base:
#   onnxruntime  tritonserver:TAG-py3 with onnxruntime-gpu, tokenizers and llguidance
#                added (tritonkit's engine, `repo build --engine onnxruntime|tensorrt`)
#   vllm         tritonserver:TAG-vllm-python-py3, NGC's image with vLLM installed, for
#                `repo build --engine vllm`; nothing is added to its Python, and tritonkit
#                gets a venv of its own so tritonclient's numpy<2 never replaces vLLM's
#
# Every version here comes from tritonkit/versions.py, the one place they are declared:
# TRITON_TAG's default must equal its TRITON_TAG (tests/test_gpu_path.py checks), and the
# pip packages are read from it during the build. 26.08 = CUDA 13.4, Python 3.12 and an
# onnxruntime backend 1.28.0, the same onnxruntime the entry model gets from the
# onnxruntime-gpu 1.28.0 wheel (a CUDA 13 build): both load what `tritonkit export` writes.
ARG TRITON_TAG=26.08
ARG ENGINE=onnxruntime
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3 AS base-onnxruntime
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-vllm-python-py3 AS base-vllm
# BuildKit builds only the stage ENGINE names; an unknown ENGINE fails here.
FROM base-${ENGINE}
ARG ENGINE

COPY tritonkit/versions.py /opt/tritonkit-versions.py
RUN mkdir -p /etc/tritonkit \
    && python3 /opt/tritonkit-versions.py MIN_DRIVER > /etc/tritonkit/min-driver \
    && echo "${ENGINE}" > /etc/tritonkit/engine \
    && if [ "${ENGINE}" = onnxruntime ]; then \
        python3 /opt/tritonkit-versions.py requirements gpu > /tmp/gpu-requirements.txt \
        && python3 -m pip install --no-cache-dir --break-system-packages \
            -r /tmp/gpu-requirements.txt \
        && python3 -c "import onnxruntime as o; p = o.get_available_providers(); \
assert 'CUDAExecutionProvider' in p, p; print('onnxruntime', o.__version__, p)"; \
    else \
        python3 /opt/tritonkit-versions.py check-vllm; \
    fi

# tritonkit with the light extras only (no torch added to the serving image): into the
# image's Python for tritonkit's engine, into /opt/tritonkit-venv on the vLLM image (the
# entry model needs no tritonkit: its runtime is copied into each repository).
COPY pyproject.toml README.md /opt/tritonkit/
COPY tritonkit /opt/tritonkit/tritonkit
COPY core /opt/tritonkit/core
COPY export /opt/tritonkit/export
COPY model_repository /opt/tritonkit/model_repository
COPY serve /opt/tritonkit/serve
COPY client /opt/tritonkit/client
COPY blob /opt/tritonkit/blob
COPY perf /opt/tritonkit/perf
COPY gateway /opt/tritonkit/gateway
COPY deploy /opt/tritonkit/deploy
RUN if [ "${ENGINE}" = onnxruntime ]; then \
        python3 -m pip install --no-cache-dir --break-system-packages \
            "/opt/tritonkit[azure,gateway]"; \
    else \
        python3 -m venv --without-pip /opt/tritonkit-venv \
        && python3 -m pip --python /opt/tritonkit-venv/bin/python install --no-cache-dir \
            "/opt/tritonkit[azure,gateway]" \
        && ln -s /opt/tritonkit-venv/bin/tritonkit /usr/local/bin/tritonkit \
        && python3 /opt/tritonkit-versions.py check-vllm; \
    fi

COPY deploy/triton-entrypoint.sh /usr/local/bin/triton-entrypoint.sh
RUN chmod 0755 /usr/local/bin/triton-entrypoint.sh \
    && useradd --create-home --uid 1001 tritonkit \
    && mkdir -p /models && chown tritonkit /models
USER tritonkit
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/triton-entrypoint.sh"]
