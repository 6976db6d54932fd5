"""The toy CLIP: an ordinary open_clip ``CLIP`` registered under the model name ``sae-clip-toy``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file, save_file

from sae_clip_plugin.atomic import atomic_write

MODEL_NAME = "sae-clip-toy"
CONFIG_PATH = Path(__file__).with_name(f"{MODEL_NAME}.json")
WEIGHTS_PATH = Path(__file__).parent / "weights" / "toy_clip.safetensors"
TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def register_toy_config() -> None:
    """Make ``open_clip.create_model('sae-clip-toy')`` and ``get_tokenizer`` work (idempotent)."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def toy_model_config() -> dict[str, Any]:
    return json.loads(CONFIG_PATH.read_text())


def create_toy_clip(**overrides: Any) -> torch.nn.Module:
    """A randomly initialised toy CLIP; ``overrides`` (e.g. ``vision_cfg={...}``) replace config entries."""
    register_toy_config()
    if not overrides:
        logger = logging.getLogger()  # open_clip warns "No pretrained weights loaded" on the root logger
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return open_clip.create_model(MODEL_NAME, pretrained=None)
        finally:
            logger.setLevel(level)
    cfg = toy_model_config()
    for key, value in overrides.items():
        cfg[key] = (
            {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
        )
    return open_clip.model.CLIP(**cfg)


def toy_preprocess():
    """open_clip's eval image transform for the toy config (64 px, OpenAI mean/std)."""
    register_toy_config()
    model_cfg = toy_model_config()
    return open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False)


def toy_tokenizer():
    register_toy_config()
    return open_clip.get_tokenizer(MODEL_NAME)


def load_toy_clip(device: str | torch.device = "cpu", weights: str | os.PathLike | None = None):
    """The bundled toy CLIP in float32 eval mode, with its preprocess transform and tokenizer.

    Returns ``(model, preprocess, tokenizer)`` like ``open_clip.create_model_and_transforms`` (val
    transform) plus ``open_clip.get_tokenizer``. ``weights`` defaults to the file shipped in the package.
    """
    path = Path(weights) if weights is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"toy CLIP weights not found at {path}; reinstall sae_clip_plugin with its package data, "
            "or train them with `sae-clip toy-train`."
        )
    register_toy_config()
    model = create_toy_clip().to(device)
    model.load_state_dict(read_weights(path))
    model.eval()
    return model, toy_preprocess(), open_clip.get_tokenizer(MODEL_NAME)


# The text tower's token embedding (49408 BPE rows) is most of the model, but training touches only the rows of
# the world's words: the others are stored as absent and read back as zeros, which keeps the file small.
ROWS_KEY, VALUES_KEY = "token_embedding.rows", "token_embedding.values"
EMBEDDING_KEY = "token_embedding.weight"


def save_weights(
    model: torch.nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    trained_token_rows: torch.Tensor | None = None,
) -> Path:
    """Write the state dict as float16 safetensors, atomically (temp file in the same folder, then rename).

    trained_token_rows: indices of the token-embedding rows training changed; only those are stored.
    """
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    if trained_token_rows is not None:
        rows = trained_token_rows.to(torch.int64).cpu()
        state[ROWS_KEY] = rows
        state[VALUES_KEY] = state.pop(EMBEDDING_KEY)[rows].contiguous()
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The float32 state dict of a saved toy CLIP (token-embedding rows not stored come back as zeros)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    if ROWS_KEY in state:
        rows, values = state.pop(ROWS_KEY), state.pop(VALUES_KEY)
        vocab = toy_model_config()["text_cfg"]["vocab_size"]
        embedding = torch.zeros(vocab, values.shape[1])
        embedding[rows] = values
        state[EMBEDDING_KEY] = embedding
    return state


def trained_rows(trained: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """Rows of an embedding that training changed (rows of tokens never seen keep their exact initial values)."""
    return (trained.detach().cpu() != initial.detach().cpu()).any(-1).nonzero().flatten()


register_toy_config()  # open_clip.create_model("sae-clip-toy") works once the toy model is imported
