# Builds TensorRT engines on the VM's GPU with the TensorRT of the same NGC release
# as the Triton image (engines are tied to GPU and TensorRT version). The PyTorch
# image of a release carries that release's TensorRT and a CUDA torch.
ARG TRITON_TAG=24.10
FROM nvcr.io/nvidia/pytorch:${TRITON_TAG}-py3
RUN python3 -m pip install --no-cache-dir "onnxruntime==1.20.1" "tokenizers==0.21.0" "onnx==1.17.0"
COPY . /opt/tritonkit
RUN python3 -m pip install --no-cache-dir --no-deps /opt/tritonkit
ENTRYPOINT ["tritonkit", "export", "tensorrt"]
