# Builds TensorRT engines on the VM's GPU with the TensorRT of the same NGC release
# as the Triton image (engines are tied to GPU and TensorRT version). The PyTorch
# image of a release carries that release's TensorRT and a CUDA torch.
ARG TRITON_TAG=26.08
FROM nvcr.io/nvidia/pytorch:${TRITON_TAG}-py3
# Versions from tritonkit/versions.py (the TAG default too: tests/test_gpu_path.py checks).
COPY tritonkit/versions.py /opt/tritonkit-versions.py
RUN python3 /opt/tritonkit-versions.py requirements engine > /tmp/engine-requirements.txt \
    && python3 -m pip install --no-cache-dir --break-system-packages \
        -r /tmp/engine-requirements.txt
# Only the package's folders (as the Triton image): no tests, outputs or local files.
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
RUN python3 -m pip install --no-cache-dir --no-deps /opt/tritonkit
ENTRYPOINT ["tritonkit", "export", "tensorrt"]
