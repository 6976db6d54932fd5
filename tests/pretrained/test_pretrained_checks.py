"""Every loaded SAE has a usable k and finite weights, or loading names the file and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from sae_lens import SAE, TopKSAE, TopKSAEConfig

from sae_clip_plugin.pretrained import load_prisma_sae, load_sae, restricted_torch_load

PRODUCED = Path(__file__).parent / "producers" / "prisma"


def _prisma_copy(tmp_path: Path, name: str = "topk_cls") -> Path:
    folder = tmp_path / name
    shutil.copytree(PRODUCED / name, folder)
    return folder


@pytest.mark.parametrize("k", [0, -3, 257, 2.5])
def test_a_prisma_config_with_an_unusable_k_is_refused(tmp_path, k):
    """k = 0 used to load and evaluate as 'L0 0, 100% dead'; k > d_sae failed only at first use."""
    folder = _prisma_copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["activation_fn_kwargs"] = {"k": k}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError, match=r"n_images_2600058.pt: k=.*1 <= k <= d_sae \(256\)|k=2.5: k must be a whole number"
    ):
        load_prisma_sae(folder)


def test_a_prisma_file_with_nan_weights_is_refused(tmp_path):
    folder = _prisma_copy(tmp_path, "vanilla")
    weights = folder / "n_images_2600058.pt"
    state = restricted_torch_load(weights)["state_dict"]
    state["W_dec"][3, 5] = float("nan")
    torch.save(state, weights)  # a bare state dict beside config.json, another layout Prisma repos use
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) .* in W_dec"):
        load_sae(folder)


def _sae_lens_folder(tmp_path: Path, k: int) -> Path:
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=4))
    folder = tmp_path / "sae"
    sae.save_model(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("k", [0, -1, 17])
def test_a_sae_lens_folder_with_an_unusable_k_is_refused(tmp_path, k):
    folder = _sae_lens_folder(tmp_path, k)
    SAE.load_from_disk(folder)  # sae_lens itself accepts it ...
    with pytest.raises(ValueError, match=rf"k={k} active features per token"):
        load_sae(folder)  # ... and our loader names it


def test_a_usable_k_loads(tmp_path):
    assert load_sae(_sae_lens_folder(tmp_path, 16)).cfg.k == 16


def test_a_damaged_safetensors_header_names_the_file(tmp_path):
    folder = _sae_lens_folder(tmp_path, 4)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # the header length, garbled
    with pytest.raises(ValueError, match=r"sae_weights.safetensors is damaged .*restore it"):
        load_sae(folder)
