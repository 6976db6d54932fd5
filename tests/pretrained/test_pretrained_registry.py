"""The release registry injected into sae_lens, sae_lens-format hub repos, saving and upload."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import sae_lens
import torch
from sae_lens import SAE
from sae_lens.loading import pretrained_saes_directory as directory_module

from sae_clip_plugin.pretrained import (
    CELEBA_RELEASE,
    CLS_TOPK_RELEASE,
    VANILLA_RELEASE,
    list_pretrained,
    register_pretrained_releases,
    save_sae,
    upload_sae,
)

VISION_METADATA = {
    "model_name": "toy",
    "hook_name": "blocks.1.hook_resid_post",
    "context_size": 50,
    "prepend_bos": False,
    "token_selection": "all",
    "image_size": 224,
    "patch_size": 32,
    "n_tokens": 50,
    "cls_token_index": 0,
    "weight_processing": {"fold_ln": False, "center_writing_weights": False},
}


def _small_sae(seed: int = 0, **metadata) -> SAE:
    torch.manual_seed(seed)
    sae = SAE.from_dict(
        {"architecture": "standard", "d_in": 8, "d_sae": 32, "metadata": {**VISION_METADATA, **metadata}}
    )
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    return sae


def test_registry_lists_every_family():
    rows = list_pretrained()
    by_release = {
        r: [row for row in rows if row["release"] == r]
        for r in (VANILLA_RELEASE, CLS_TOPK_RELEASE, CELEBA_RELEASE)
    }
    assert len(by_release[VANILLA_RELEASE]) == 12 * 2 * 4
    assert len(by_release[CLS_TOPK_RELEASE]) == 12 * 2
    assert {r["hook_name"] for r in by_release[CELEBA_RELEASE]} == {
        "blocks.10.hook_resid_post",
        "blocks.11.hook_resid_post",
    }
    # the other families (saev, visaebench, CLIP-Scope) have their own tests
    prisma_rows = [r for r in rows if r["release"].startswith("prisma-")]
    assert all(r["model"] == "open_clip:ViT-B-32/datacomp_xl_s13b_b90k" for r in prisma_rows)
    vanilla = {r["sae_id"]: r for r in by_release[VANILLA_RELEASE]}
    row = vanilla["blocks.7.hook_mlp_out/l1_8e-05"]
    assert (
        row["repo_id"]
        == "Prisma-Multimodal/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-7-hook_mlp_out-l1-8e-05"
    )
    assert (row["filename"], row["l1_coefficient"], row["token_selection"]) == (
        "n_images_2600058.pt",
        8e-05,
        "all",
    )
    assert {r["k"] for r in by_release[CLS_TOPK_RELEASE]} == {64}
    assert len({(r["release"], r["sae_id"]) for r in rows}) == len(rows)


def test_registration_is_idempotent_and_survives_cache_clear():
    register_pretrained_releases()
    first = directory_module.get_pretrained_saes_directory
    register_pretrained_releases()
    assert directory_module.get_pretrained_saes_directory is first
    # every sae_lens module that resolves releases sees the same function
    from sae_lens.loading import pretrained_sae_loaders
    from sae_lens.saes import sae as sae_module

    assert sae_module.get_pretrained_saes_directory is first
    assert pretrained_sae_loaders.get_pretrained_saes_directory is first
    assert pretrained_sae_loaders.get_conversion_loader_name(VANILLA_RELEASE) == "prisma_vision"

    directory = first()
    assert "gpt2-small-res-jb" in directory  # sae_lens' own releases are untouched
    lookup = directory[VANILLA_RELEASE]
    assert lookup.saes_map["blocks.0.hook_resid_post/l1_1e-05"].endswith("/n_images_2600058.pt")
    first.cache_clear()
    assert CELEBA_RELEASE in directory_module.get_pretrained_saes_directory()
    assert directory_module.get_repo_id_and_folder_name(CLS_TOPK_RELEASE, "blocks.3.hook_mlp_out") == (
        "Prisma-Multimodal",
        "sae-top_k-64-cls_only-layer_3-hook_mlp_out/weights.pt",
    )


def test_unknown_sae_id_is_rejected_by_sae_lens():
    register_pretrained_releases()
    with pytest.raises(ValueError, match="not found in release"):
        SAE.from_pretrained(VANILLA_RELEASE, "blocks.0.hook_resid_post")  # the l1 suffix is required


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def _snapshot(cache: Path, repo_id: str) -> Path:
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_sae_lens_format_hub_repo_loads_as_in_sae_lens(hf_cache):
    register_pretrained_releases()
    sae = _small_sae(seed=1)
    save_sae(sae, _snapshot(hf_cache, "my-org/vision-saes") / "blocks.1.hook_resid_post")

    loaded = SAE.from_pretrained("my-org/vision-saes", "blocks.1.hook_resid_post")

    for name, tensor in sae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)
    for key, value in VISION_METADATA.items():
        assert loaded.cfg.metadata[key] == value


def test_save_sae_writes_version_and_round_trips(tmp_path):
    sae = _small_sae(seed=2)
    sae.cfg.metadata.sae_lens_version = None  # as after loading a pre-6 config
    path = save_sae(sae, tmp_path / "out")
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["metadata"]["sae_lens_version"] == sae_lens.__version__
    loaded = SAE.load_from_disk(path)
    assert loaded.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert loaded.cfg.metadata.weight_processing == VISION_METADATA["weight_processing"]
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), sae(x))

    with pytest.raises(FileExistsError):
        save_sae(sae, path)
    other = _small_sae(seed=3)
    save_sae(other, path, overwrite=True)
    torch.testing.assert_close(SAE.load_from_disk(path).W_enc, other.W_enc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left behind

    sae.cfg.metadata.not_json = torch.zeros(1)
    with pytest.raises(TypeError, match="JSON"):
        save_sae(sae, tmp_path / "bad")


def test_upload_sae_checks_arguments_and_calls_sae_lens(tmp_path, monkeypatch):
    calls = []

    def fake_upload(saes_dict, hf_repo_id, hf_revision="main", show_progress=True, add_default_readme=True):
        for sae_id, folder in saes_dict.items():
            calls.append(
                (sae_id, hf_repo_id, hf_revision, json.loads((Path(folder) / "cfg.json").read_text()))
            )

    monkeypatch.setattr(sae_lens, "upload_saes_to_huggingface", fake_upload)
    sae = _small_sae(seed=4)
    with pytest.raises(ValueError, match="org/name"):
        upload_sae(sae, "not-a-repo-id")
    with pytest.raises(FileNotFoundError, match="not a sae_lens SAE folder"):
        upload_sae(tmp_path, "me/saes")
    with pytest.raises(ValueError, match="relative sae_id"):
        upload_sae(sae, "me/saes", sae_id="../escape")

    assert upload_sae(sae, "me/saes") == "blocks.1.hook_resid_post"
    sae_id, repo, revision, cfg = calls[-1]
    assert (sae_id, repo, revision) == ("blocks.1.hook_resid_post", "me/saes", "main")
    assert cfg["metadata"]["sae_lens_version"] == sae_lens.__version__


def test_sae_clip_info_lists_every_registered_release(capsys):
    from sae_clip_plugin.cli import main as cli_main

    assert cli_main(["info", "--list-pretrained"]) == 0
    out = capsys.readouterr().out
    releases = {row["release"] for row in list_pretrained()}
    assert len(releases) >= 7  # Prisma's four, saev, visaebench, CLIP-Scope (one of each at least)
    for release in releases:
        assert release in out
    assert (
        "clipscope-clip-vit-l-14-laion2b | blocks.{l}.hook_resid_post (l = 2, 5, 8, 11, 14, 17, 20, 22)"
        in out
    )
    assert "| 65536 | k 32 | all" in out
