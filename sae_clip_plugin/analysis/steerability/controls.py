"""The random-model control of the steerability measurement: `random_vision_model` (model/random_init.py), also
reachable as the model spec `random:<spec>` (model/specs.py)."""

from sae_clip_plugin.model.random_init import random_vision_model

__all__ = ["random_vision_model"]
