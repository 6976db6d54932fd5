"""SAE metadata for vision SAEs (docs/conventions.md)."""

from __future__ import annotations

from typing import Any


def seqpos_slice(geometry: dict[str, Any]) -> tuple[int | None, ...]:
    """sae_lens' seqpos_slice for the selected tokens, so `ActivationsStore.from_sae` slices alike."""
    from sae_clip_plugin.model.tokens import TokenSelection  # lazy: torch

    return TokenSelection(geometry["token_selection"]).seqpos_slice(geometry["has_cls"])


def vision_metadata(
    model_cfg: dict[str, Any],
    geometry: dict[str, Any],
    dataset: dict[str, Any],
    model_spec: str | None = None,
) -> dict[str, Any]:
    """The metadata keys of docs/conventions.md for an SAE on one hook.

    `model_cfg` is `HookedViTConfig.to_dict()`, `geometry` is `HookGeometry.to_dict()` and `dataset`
    is the image source's `describe()`.
    """
    import sae_lens  # lazy: sae_lens

    image_size, patch_size = model_cfg["image_size"], model_cfg["patch_size"]
    return {
        "model_name": model_cfg.get("model_spec") or model_spec,
        "model_class_name": "HookedViT",
        "hook_name": geometry["hook_name"],
        "hook_head_index": None,
        "context_size": geometry["context_size"],
        "prepend_bos": False,
        "seqpos_slice": seqpos_slice(geometry),
        "token_selection": geometry["token_selection"],
        "cls_token_index": 0,
        "image_size": image_size,
        "patch_size": patch_size,
        "n_tokens": model_cfg.get("n_tokens", 1 + (image_size // patch_size) ** 2),
        "weight_processing": {
            "fold_ln": model_cfg.get("fold_ln", False),
            "center_writing_weights": model_cfg.get("center_writing_weights", False),
        },
        "preprocessing": model_cfg.get("preprocess") or {},
        "dataset": dataset,
        "dataset_path": str(dataset.get("root") or dataset.get("name") or ""),
        "sae_lens_version": sae_lens.__version__,
    }
