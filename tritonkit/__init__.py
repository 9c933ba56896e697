"""tritonkit: a Hugging Face causal LM on a GPU behind Triton Inference Server, as an API.

The packages follow the data flow:
``tritonkit.export`` (HF model -> verified ONNX) -> ``tritonkit.model_repository``
(ONNX -> Triton model repository) -> ``tritonkit.serve`` (a running Triton) ->
``tritonkit.client`` (Python clients and the CLI's requests).
"""

__version__ = "0.1.0"
