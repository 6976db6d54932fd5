"""The text side of CLIP, kept as a plain (unhooked) module for zero-shot classification."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from torch import nn

Template = str | Callable[[str], str]


class TextTower(nn.Module):
    """A source's text encoder, its tokenizer and its learned logit scale.

    `encoder(tokens)` returns unnormalised text embeddings in the joint space. Exposes
    `encode_text(tokens, normalize)` so open_clip's own `build_zero_shot_classifier` can drive it.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Callable, log_logit_scale: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.logit_scale = nn.Parameter(log_logit_scale.detach().clone().reshape(()), requires_grad=False)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        emb = self.encoder(tokens.to(self.device))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode(self, texts: Sequence[str] | torch.Tensor, normalize: bool = False) -> torch.Tensor:
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.encode_text(tokens, normalize=normalize)

    @torch.no_grad()
    def zero_shot_weights(
        self,
        classnames: Sequence[str] | None = None,
        templates: Sequence[Template] | None = None,
        use_tqdm: bool = False,
    ) -> torch.Tensor:
        """Mean of normalised template embeddings per class, renormalised: [d_embed, n_classes]."""
        classnames = list(IMAGENET_CLASSNAMES if classnames is None else classnames)
        templates = list(OPENAI_IMAGENET_TEMPLATES if templates is None else templates)
        if not classnames or not templates:
            raise ValueError("zero_shot_weights needs at least one class name and one template")
        if isinstance(templates[0], str) and "{}" not in templates[0]:
            raise ValueError(f"template {templates[0]!r} has no '{{}}' placeholder for the class name")
        return open_clip.build_zero_shot_classifier(
            self,
            self.tokenizer,
            classnames,
            templates,
            num_classes_per_batch=10,
            device=self.device,
            use_tqdm=use_tqdm,
        )


class OpenClipTextEncoder(nn.Module):
    """A copy of an open_clip model without its image tower; forwards to the host's own encode_text."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        visual = clip_model.visual
        clip_model.visual = nn.Identity()
        try:
            self.model = copy.deepcopy(clip_model)
        finally:
            clip_model.visual = visual

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=False)


class HFTextEncoder(nn.Module):
    """transformers CLIPTextModel + text_projection (pooled at the end-of-text token by the host)."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module):
        super().__init__()
        self.text_model = copy.deepcopy(text_model)
        self.text_projection = copy.deepcopy(text_projection)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=tokens).pooler_output
        return self.text_projection(pooled)


def open_clip_text_tower(clip_model: Any, tokenizer: Callable) -> TextTower | None:
    """The text side of an open_clip CLIP / CustomTextCLIP / CoCa; None for a bare image tower."""
    if not hasattr(clip_model, "encode_text") or not hasattr(clip_model, "logit_scale"):
        return None
    return TextTower(OpenClipTextEncoder(clip_model), tokenizer, clip_model.logit_scale)


class HFTokenizer:
    """Adapts a transformers CLIP tokenizer to open_clip's call convention (list[str] -> LongTensor)."""

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return out["input_ids"]


def zero_shot_logits(
    image_embeds: torch.Tensor, weights: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """logit_scale * normalise(image_embeds) @ weights, with weights [d_embed, n_classes] (unit columns)."""
    if image_embeds.shape[-1] != weights.shape[0]:
        raise ValueError(
            f"image embeddings are {image_embeds.shape[-1]} wide but the classifier expects {weights.shape[0]}; "
            "weights must be [d_embed, n_classes] (as model.zero_shot_weights returns)"
        )
    scale = torch.as_tensor(logit_scale, dtype=image_embeds.dtype, device=image_embeds.device)
    return scale * F.normalize(image_embeds, dim=-1) @ weights.to(image_embeds.device, image_embeds.dtype)
