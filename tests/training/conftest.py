"""Fixtures for the training tests: a tiny random HookedViT, pixel tensors and small image folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from sae_clip_plugin import HookedViT

TINY_SPEC = "open_clip:tiny-test"
TINY_VISION = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32}
TINY_TEXT = {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}


def tiny_model(seed: int = 0) -> HookedViT:
    """A 2-layer, 32 px, patch-8 ViT (17 tokens, d_model 64) with random weights."""
    torch.manual_seed(seed)
    clip = open_clip.CLIP(embed_dim=32, vision_cfg=TINY_VISION, text_cfg=TINY_TEXT).eval()
    return HookedViT.from_open_clip(clip, model_spec=TINY_SPEC).eval()


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    """Tiny tensors run fastest on one thread (and the shared CI cores are oversubscribed)."""
    import datasets

    datasets.disable_progress_bars()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exceeds the .* tokens of one pass.*")
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model() -> HookedViT:
    return tiny_model()


@pytest.fixture(scope="session")
def pixels() -> torch.Tensor:
    return torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def write_images(folder: Path, n: int, size: int = 40, classes: int = 0, seed: int = 0) -> list[Path]:
    """Random RGB PNGs, flat or spread over `classes` subfolders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / f"class_{i % classes}" if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
