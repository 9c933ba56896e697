# Builds TensorRT engines on the VM's GPU with the TensorRT of the same NGC release
# as the Triton image (engines are tied to GPU and TensorRT version). The PyTorch
# image of a release carries that release's TensorRT and a CUDA torch.
ARG TRITON_TAG=24.10
FROM nvcr.io/nvidia/pytorch:${TRITON_TAG}-py3
RUN python3 -m pip install --no-cache-dir "onnxruntime==1.20.1" "tokenizers==0.21.0" "onnx==1.17.0"
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
