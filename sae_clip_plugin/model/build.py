"""Assemble a HookedViT from a config and a state dict in its own layout."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.text import TextTower
from sae_clip_plugin.model.weights import StateDict, process_weights

if TYPE_CHECKING:  # the converters receive the class; importing it here would be a cycle
    from sae_clip_plugin.model.hooked_vit import HookedViT


@dataclass(frozen=True)
class BuildOptions:
    """How a converted model is finalised; every converter accepts these as keyword arguments."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    fold_value_biases: bool = False
    dtype: torch.dtype | str | None = None
    device: torch.device | str | None = None
    model_cls: type[HookedViT] | None = None  # HookedViT or a subclass (its constructors pass themselves)

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> BuildOptions:
        """Take the build options out of a converter's **kwargs, leaving the rest for the source."""
        return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs})


def build_hooked_vit(
    cfg: HookedViTConfig,
    state_dict: StateDict,
    text: TextTower | None = None,
    preprocess: Callable | None = None,
    options: BuildOptions = BuildOptions(),
) -> HookedViT:
    """Process weights as asked, load them strictly, and put the model in eval mode."""
    dtype, device, model_cls = options.dtype, options.device, options.model_cls
    if model_cls is None:
        raise TypeError(
            "build_hooked_vit needs options.model_cls (HookedViT or a subclass); use HookedViT.from_open_clip"
        )
    if dtype is not None:
        dtype = str(dtype).removeprefix("torch.")
    cfg = dataclasses.replace(
        cfg,
        fold_ln=options.fold_ln,
        center_writing_weights=options.center_writing_weights,
        fold_value_biases=options.fold_value_biases,
        dtype=dtype or cfg.dtype,
    )
    state_dict = process_weights({k: v.float() for k, v in state_dict.items()}, cfg)
    model = model_cls(cfg, text=text, preprocess=preprocess)
    expected = {k for k, _ in model.named_parameters() if not k.startswith("text.")}
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise RuntimeError(
            f"converter bug: state dict does not fit HookedViT (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    model.load_state_dict(state_dict, strict=False)
    model.to(dtype=cfg.torch_dtype)
    if device is not None:
        model.to(device)
    return model.eval()
