"""The toy CLIP world: a synthetic image-caption world with planted concepts and a small CLIP trained on it.

Entry points: :func:`load_toy_clip` (bundled weights), the dataset helpers, :func:`train_toy_clip`
(the recipe that produced the weights) and :func:`evaluate_toy_clip` (its reference numbers: zero-shot, typographic and spurious-group accuracy).
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "ToyDataset": "datasets",
    "background_spurious_set": "datasets",
    "colour_spurious_set": "datasets",
    "train_dataset": "datasets",
    "typographic_set": "datasets",
    "evaluate_toy_clip": "evaluate",
    "format_report": "evaluate",
    "MODEL_NAME": "model",
    "TEMPLATES": "model",
    "WEIGHTS_PATH": "model",
    "create_toy_clip": "model",
    "load_toy_clip": "model",
    "register_toy_config": "model",
    "toy_preprocess": "model",
    "toy_tokenizer": "model",
    "WorldConfig": "sampling",
    "train_sample": "sampling",
    "train_toy_clip": "train",
    "BACKGROUNDS": "world",
    "COLOURS": "world",
    "SHAPES": "world",
    "ToySample": "world",
    "render": "world",
    "toy_classnames": "vocabulary",
    "toy_templates": "vocabulary",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
