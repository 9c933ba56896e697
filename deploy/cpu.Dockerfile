# The CPU image of the stack (Triton, model-sync, the gateway): the same
# entrypoint, non-root user and restricted APIs as the GPU image (Dockerfile), with
# tritonserver from the nvidia-pytriton wheel instead of NVIDIA's NGC image.
#
# BASE: debian:bookworm-slim where Docker Hub is reachable; without a registry,
# scripts/build_base_image.sh makes tritonkit-base:bookworm (debootstrap, same Debian).
# The build context (made by scripts/build_cpu_image.sh) holds a wheelhouse downloaded on
# the host (wheelhouse/deps, wheelhouse/tritonkit) and each image's requirements
# (client.txt, cpu.txt), so nothing inside needs the network.
ARG BASE=tritonkit-base:bookworm

# Layers: each image's dependencies are installed in a stage of their own and copied in
# as one finished venv, then the tritonkit wheel goes on top. A code change rebuilds only
# that small top layer (the dependency stages stay cached), and the wheelhouse never
# lands in an image's layers (the legacy builder has no RUN --mount to avoid that).
# Stages come in build order: the legacy builder builds every stage before its target.
# scripts/build_cpu_image.sh tags the dependency stages too (IMAGE-deps), so that when
# the dependencies change the old stage is dangling and its label lets the build remove it.

FROM ${BASE} AS client-deps
LABEL dev.tritonkit.image=client-deps
COPY wheelhouse/deps /tmp/deps
COPY wheelhouse/client.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/deps \
        -r /tmp/requirements.txt

# The client image (target `client`): `pip install tritonkit` and nothing else: the gRPC
# and HTTP clients, chat templates, the CLI; no torch, onnxruntime or tritonserver. What a
# laptop's container needs to call the GPU as an API.
FROM ${BASE} AS client
LABEL dev.tritonkit.image=client
COPY --from=client-deps /opt/venv /opt/venv
COPY wheelhouse/tritonkit /tmp/tritonkit
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/tritonkit/*.whl \
    && rm -rf /tmp/tritonkit \
    && useradd --create-home --uid 1001 tritonkit
ENV PATH=/opt/venv/bin:${PATH} PYTHONDONTWRITEBYTECODE=1
USER tritonkit
ENTRYPOINT ["tritonkit"]

FROM ${BASE} AS cpu-deps
LABEL dev.tritonkit.image=cpu-deps
COPY wheelhouse/deps /tmp/deps
COPY wheelhouse/cpu.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/deps \
        -r /tmp/requirements.txt

# The CPU image (the default, last target).
FROM ${BASE} AS cpu
LABEL dev.tritonkit.image=cpu
COPY --from=cpu-deps /opt/venv /opt/venv
COPY wheelhouse/tritonkit /tmp/tritonkit
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/tritonkit/*.whl \
    && rm -rf /tmp/tritonkit
ENV PATH=/opt/venv/bin:${PATH} PYTHONDONTWRITEBYTECODE=1

# `tritonserver` on PATH, as in the NGC image: the wheel's binary with its backend folder
# (built once here) and the environment it needs.
COPY deploy/cpu/install_tritonserver.py /tmp/install_tritonserver.py
RUN python /tmp/install_tritonserver.py /opt/tritonkit-backends /usr/local/bin/tritonserver \
    && rm /tmp/install_tritonserver.py

COPY deploy/triton-entrypoint.sh /usr/local/bin/triton-entrypoint.sh
RUN chmod 0755 /usr/local/bin/triton-entrypoint.sh \
    && mkdir -p /etc/tritonkit && echo onnxruntime > /etc/tritonkit/engine \
    && useradd --create-home --uid 1001 tritonkit \
    && mkdir -p /models && chown tritonkit /models
USER tritonkit
EXPOSE 8000 8001 8002 9000
ENTRYPOINT ["tini", "--", "/usr/local/bin/triton-entrypoint.sh"]
