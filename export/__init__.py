"""Export a Hugging Face causal LM to an ONNX decoder with KV cache, verified against PyTorch."""

from .architectures import supported_architectures
from .onnx_export import ExportResult, main_export

__all__ = ["ExportResult", "main_export", "supported_architectures"]
