"""Training vision SAEs with sae_lens' trainer on HookedViT activations, with a resumable activation cache.

    from sae_clip_plugin.training import VisionSAERunnerConfig, VisionSAETrainingRunner
    cfg = VisionSAERunnerConfig(dataset="/data/images", hook_name="blocks.6.hook_resid_post",
                                cache_path="cache/", training_tokens=10_000_000)
    sae = VisionSAETrainingRunner(cfg).run()   # -> sae_lens folder at cfg.output_path

Pieces, usable alone: image sources (`image_source`), `ActivationHarvester` (one forward pass, many
hooks, token selection), `write_activation_cache` / `ActivationDiskCache` (sae_lens cached-activation
layout, resumable), `ActivationProvider` (sae_lens mixing buffer, exact-size batches) and
`evaluate_sae` (explained variance, L0 for CLS vs patches, dead features).
"""

from sae_clip_plugin.training.cache import (
    ActivationDiskCache,
    CacheMismatchError,
    model_fingerprint,
    write_activation_cache,
)
from sae_clip_plugin.training.config import PRESETS, TRAINING_ARCHITECTURES, VisionSAERunnerConfig
from sae_clip_plugin.training.evaluate import evaluate_sae
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.metadata import vision_metadata
from sae_clip_plugin.training.provider import ActivationProvider, EpochOrder
from sae_clip_plugin.training.runner import VisionSAETrainingRunner, train_vision_sae
from sae_clip_plugin.training.sources import (
    FolderSource,
    HFDatasetSource,
    ImageLoadError,
    ImageSource,
    SubsetSource,
    TensorSource,
    TorchDatasetSource,
    ToySource,
    image_source,
    validate_source,
)
from sae_clip_plugin.training.tokens import TOKEN_SELECTIONS, HookGeometry, hook_geometry, stop_at_layer_for

__all__ = [
    "PRESETS",
    "TOKEN_SELECTIONS",
    "TRAINING_ARCHITECTURES",
    "ActivationDiskCache",
    "ActivationHarvester",
    "ActivationProvider",
    "CacheMismatchError",
    "EpochOrder",
    "FolderSource",
    "HFDatasetSource",
    "HookGeometry",
    "ImageLoadError",
    "ImageSource",
    "SubsetSource",
    "TensorSource",
    "TorchDatasetSource",
    "ToySource",
    "VisionSAERunnerConfig",
    "VisionSAETrainingRunner",
    "evaluate_sae",
    "hook_geometry",
    "image_source",
    "model_fingerprint",
    "stop_at_layer_for",
    "train_vision_sae",
    "validate_source",
    "vision_metadata",
    "write_activation_cache",
]
