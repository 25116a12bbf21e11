"""Reading an ONNX file without running it: its structure, interface, weight type and graph signature."""
