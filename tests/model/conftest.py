"""Fixtures for the model tests."""

from __future__ import annotations

import open_clip
import pytest
import torch

from sae_clip_plugin import HookedViT
from tests.model.clips import small_open_clip


@pytest.fixture(scope="module")
def clip_pair() -> tuple[torch.nn.Module, HookedViT]:
    clip = small_open_clip()
    return clip, HookedViT.from_open_clip(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
