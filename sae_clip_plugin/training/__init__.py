"""Training vision SAEs with sae_lens' trainer on HookedViT activations, with a resumable activation cache.

    from sae_clip_plugin.training import VisionSAERunnerConfig, VisionSAETrainingRunner
    cfg = VisionSAERunnerConfig(dataset_path="/data/images", hook_name="blocks.6.hook_resid_post",
                                cache_path="cache/", training_tokens=10_000_000)
    sae = VisionSAETrainingRunner(cfg).run()   # -> sae_lens folder at cfg.output_path

Pieces, usable alone: image sources (`image_source`), `ActivationHarvester` (one forward pass, many
hooks, token selection), `write_activation_cache` / `ActivationDiskCache` (sae_lens cached-activation
layout, resumable), `ActivationProvider` (sae_lens' mixing-buffer algorithm, exact-size batches, exact resume) and
`evaluate_on_activations` (explained variance, L0 for CLS vs patches, dead features).
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "ActivationDiskCache": "cache",
    "ActivationHarvester": "harvest",
    "ActivationProvider": "provider",
    "CacheMismatchError": "cache",
    "EpochOrder": "provider",
    "FolderSource": "sources",
    "HFDatasetSource": "sources",
    "HookGeometry": "tokens",
    "ImageLoadError": "sources",
    "ImageSource": "sources",
    "PRESETS": "config",
    "SubsetSource": "sources",
    "TOKEN_SELECTIONS": "sae_clip_plugin.model.tokens",
    "TRAINING_ARCHITECTURES": "config",
    "TensorSource": "sources",
    "TorchDatasetSource": "sources",
    "RegisteredSource": "sources",
    "VisionSAERunnerConfig": "config",
    "VisionSAETrainingRunner": "runner",
    "evaluate_on_activations": "evaluate",
    "hook_geometry": "tokens",
    "image_source": "sources",
    "model_fingerprint": "cache",
    "stop_at_layer_for": "tokens",
    "train_vision_sae": "runner",
    "validate_source": "sources",
    "vision_metadata": "metadata",
    "write_activation_cache": "cache",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
