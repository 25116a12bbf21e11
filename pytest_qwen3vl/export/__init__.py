"""Making files: the builder-style export, ``qwen3vl-export``'s recipes, wrappers, grid-free replacements, tracing."""
