# The CPU image of the stack (Triton, model-sync, the gateway): the same
# entrypoint, non-root user and restricted APIs as the GPU image (Dockerfile), with
# tritonserver from the nvidia-pytriton wheel instead of NVIDIA's NGC image.
#
# BASE: debian:bookworm-slim where Docker Hub is reachable; without a registry,
# scripts/build_base_image.sh makes tritonkit-base:bookworm (debootstrap, same Debian).
# The build context (made by scripts/build_cpu_image.sh) holds a wheelhouse of tritonkit
# and its dependencies downloaded on the host, so nothing inside needs the network.
ARG BASE=tritonkit-base:bookworm

# The client image (target `client`): `pip install tritonkit` and nothing else: the gRPC
# and HTTP clients, chat templates, the CLI; no torch, onnxruntime or tritonserver. What a
# laptop's container needs to call the GPU as an API.
FROM ${BASE} AS client
COPY wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse tritonkit \
    && rm -rf /tmp/wheelhouse \
    && useradd --create-home --uid 1001 tritonkit
ENV PATH=/opt/venv/bin:${PATH} PYTHONDONTWRITEBYTECODE=1
USER tritonkit
ENTRYPOINT ["tritonkit"]

# The CPU image (the default, last target).
FROM ${BASE} AS cpu
COPY wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse \
        "tritonkit[serve,azure,gateway]" \
    && rm -rf /tmp/wheelhouse
ENV PATH=/opt/venv/bin:${PATH} PYTHONDONTWRITEBYTECODE=1

# `tritonserver` on PATH, as in the NGC image: the wheel's binary with its backend folder
# (built once here) and the environment it needs.
COPY deploy/cpu/install_tritonserver.py /tmp/install_tritonserver.py
RUN python /tmp/install_tritonserver.py /opt/tritonkit-backends /usr/local/bin/tritonserver \
    && rm /tmp/install_tritonserver.py

COPY deploy/triton-entrypoint.sh /usr/local/bin/triton-entrypoint.sh
RUN chmod 0755 /usr/local/bin/triton-entrypoint.sh \
    && useradd --create-home --uid 1001 tritonkit \
    && mkdir -p /models && chown tritonkit /models
USER tritonkit
EXPOSE 8000 8001 8002 9000
ENTRYPOINT ["tini", "--", "/usr/local/bin/triton-entrypoint.sh"]
