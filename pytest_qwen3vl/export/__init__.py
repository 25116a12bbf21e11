"""Export: the builder-style ONNX export, its artefact cache, graph signatures, ONNX Runtime and tracing."""
