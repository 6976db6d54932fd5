"""The toy CLIP's training recipe defaults (kept apart from train.py so the CLI shows them without importing torch)."""

DEFAULTS = {"seed": 0, "steps": 2000, "batch_size": 128, "lr": 2e-3, "warmup": 100, "weight_decay": 0.1}
