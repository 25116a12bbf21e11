"""The models: configs and presets, checkpoints, golden and modified with one set of weights, inputs, references."""
