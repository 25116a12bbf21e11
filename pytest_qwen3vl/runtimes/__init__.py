"""Running files: one module per runtime behind one small interface, and onnxruntime-genai's folder and prompt."""
