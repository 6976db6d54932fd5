"""One SAE resolver: folders, folders of folders, Prisma .pt files and RELEASE:SAE_ID, with named failures."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_clip_plugin.pretrained import save_sae
from sae_clip_plugin.pretrained.loading import load_sae, load_saes


def _sae(hook: str, seed: int = 0) -> StandardSAE:
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.b_enc.normal_()
    return sae


def test_folders_and_folders_of_folders(tmp_path):
    for layer in (0, 1):
        save_sae(_sae(f"blocks.{layer}.hook_resid_post", seed=layer), tmp_path / "saes" / f"L{layer}")
    found = load_saes(tmp_path / "saes")
    assert [s.cfg.metadata.hook_name for _, s in found] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    one = load_sae(tmp_path / "saes" / "L1")
    torch.testing.assert_close(one.b_enc, _sae("x", seed=1).b_enc)
    with pytest.raises(ValueError, match="holds 2 SAEs"):
        load_sae(tmp_path / "saes")


def test_a_prisma_file_loads_through_the_same_resolver(tmp_path):
    sae = _sae("blocks.2.hook_mlp_out")
    state = {k: v for k, v in sae.state_dict().items()}
    torch.save({"cfg": None, "state_dict": state}, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text('{"hook_point_layer": 2, "layer_subtype": "hook_mlp_out"}')
    loaded = load_sae(tmp_path / "weights.pt")
    torch.testing.assert_close(loaded.W_enc, sae.W_enc)
    assert loaded.cfg.metadata.hook_name == "blocks.2.hook_mlp_out"


def test_broken_folders_are_named_with_the_fix(tmp_path):
    save_sae(_sae("blocks.0.hook_resid_post"), tmp_path / "a")
    (tmp_path / "a" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"a/cfg\.json is not valid JSON .*restore it"):
        load_sae(tmp_path / "a")
    save_sae(_sae("blocks.0.hook_resid_post"), tmp_path / "b")
    (tmp_path / "b" / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no sae_weights\.safetensors: the save was interrupted"):
        load_sae(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="RELEASE:SAE_ID"):
        load_sae(tmp_path / "nowhere")
