"""One builder per engine: ``build(source, output, spec, engine, force)`` writes a
repository whose entry model serves ``tritonkit.core.interface``.

    onnxruntime.py   an `export onnx` folder -> NAME (tritonkit's engine), NAME_decoder
                     (the graph, or a TensorRT plan), NAME_sync
    vllm.py          an `export hf` folder   -> NAME (vLLM's AsyncLLM), NAME_sync
    common.py        what every builder writes alike: the runtime copy, the unary twin,
                     the chat template, the staged output folder

``build.build_repository`` picks the builder the engine spec names (``spec.py``).
"""
