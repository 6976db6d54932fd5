"""CLIP-Scope checkpoints (`<layer>_resid/<token_count>.pt`) load with clipscope's own numbers.

clipscope has no writer: the committed file is torch.save of the dict layout the released files have (sache's
checkpoint re-saved by vitsae's pull_to_hf), read back by clipscope's own TopKSAE.from_pretrained to make the
reference numbers ("documented format, producer's reader").
"""

from __future__ import annotations

import shutil

import pytest
import torch
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.pretrained import load_sae
from sae_clip_plugin.pretrained.clipscope import LAYERS, RELEASE, REPO
from sae_clip_plugin.pretrained.family_base import FamilyFormatError
from tests.pretrained.family_helpers import (
    PRODUCERS,
    assert_familys_numbers,
    assert_splices_and_steers,
    one_line_error,
    put_in_hf_cache,
    reference,
    require_package,
)
from tests.pretrained.test_pretrained_prisma import hf_cache  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
HERE = PRODUCERS / "clipscope" / "22_resid"
FILE = HERE / "1200013184.pt"


@pytest.mark.parametrize("spec", [FILE, HERE], ids=["file", "layer folder"])
def test_a_released_layout_file_loads_with_clipscopes_numbers(spec):
    sae = load_sae(spec)
    assert sae.cfg.architecture() == "raw_topk" and sae.cfg.k == 16
    meta = sae.cfg.metadata
    assert (meta.family, meta.hook_name, meta.token_selection) == (
        "clipscope",
        "blocks.22.hook_resid_post",
        "all",
    )
    assert meta.model_name == "hf:laion/CLIP-ViT-L-14-laion2B-s32B-b82K"
    assert meta.source["token_count"] == 1200013184
    assert meta.input_normalisation == {
        "trained_on": "each training batch standardised with its own per-dimension mean and std (not stored)",
        "stats_in_file": False,
        "folded": False,
    }
    ref = reference(HERE)
    assert (ref["feature_acts"] < 0).any()  # clipscope keeps negative top-k values; sae_lens' TopK would not
    assert_familys_numbers(sae, ref)


def test_through_from_pretrained_from_the_real_repo_layout(hf_cache):  # noqa: F811
    put_in_hf_cache(
        hf_cache, REPO, {"22_resid/1200013184.pt": FILE, "5_resid/100000000.pt": FILE, "5_resid/99.pt": FILE}
    )
    sae = SAE.from_pretrained(RELEASE, "blocks.22.hook_resid_post")
    assert sae.cfg.metadata.source["filename"] == "22_resid/1200013184.pt"
    assert (sae.cfg.metadata.context_size, sae.cfg.metadata.n_tokens) == (257, 257)
    assert_familys_numbers(sae, reference(HERE))
    assert_familys_numbers(load_sae(f"{RELEASE}:blocks.22.hook_resid_post"), reference(HERE))
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    cfg = load_sae_config_from_huggingface(RELEASE, "blocks.22.hook_resid_post")  # sae_lens' config-only path
    assert (cfg["architecture"], cfg["d_sae"], cfg["k"]) == ("raw_topk", 256, 16)
    # other layers: the checkpoint with the largest token count in <layer>_resid/
    five = SAE.from_pretrained(RELEASE, "blocks.5.hook_resid_post")
    assert five.cfg.metadata.hook_name == "blocks.5.hook_resid_post"
    assert five.cfg.metadata.source["path"].endswith("5_resid/100000000.pt")  # not 99.pt


def test_the_release_resolves_the_repo_and_files():
    assert get_repo_id_and_folder_name(RELEASE, "blocks.22.hook_resid_post") == (
        REPO,
        "22_resid/1200013184.pt",
    )
    assert get_repo_id_and_folder_name(RELEASE, "blocks.8.hook_resid_post") == (REPO, "8_resid")
    from sae_clip_plugin.pretrained import list_pretrained

    rows = [r for r in list_pretrained() if r["release"] == RELEASE]
    assert [r["layer"] for r in rows] == list(LAYERS)
    assert {(r["d_sae"], r["k"], r["token_selection"]) for r in rows} == {(65536, 32, "all")}


@pytest.fixture(scope="module")
def toy() -> HookedSAEViT:
    return HookedSAEViT.from_pretrained("toy")


def test_spliced_it_is_a_no_op_with_its_error_term_and_steers(toy):
    assert_splices_and_steers(toy, load_sae(FILE))


# ---------------------------------------------------------------- crafted files


def _crafted(tmp_path, **changes):
    obj = torch.load(FILE, weights_only=True)
    sd = obj["model_state_dict"]
    for key in ("pre_b", "enc", "dec"):
        if key in changes:
            sd[key] = changes.pop(key)
    obj.update(changes)
    folder = tmp_path / "22_resid"
    folder.mkdir()
    torch.save({k: v for k, v in obj.items() if v is not None}, folder / "1200013184.pt")
    return folder / "1200013184.pt"


CRAFTED = {
    "NaN weights": ({"enc": torch.full((128, 256), float("nan"))}, "NaN"),
    "dec shape": ({"dec": torch.zeros(128, 256)}, "inconsistent shapes"),
    "shapes vs stated": ({"n_features": 65536}, "n_features=65536"),
    "k <= 0": ({"k": 0}, "k=0"),
    "k > d_sae": ({"k": 257}, "k=257"),
    "k missing": ({"k": None}, "k is None"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_refused_in_one_line_naming_it(case, tmp_path):
    changes, fragment = CRAFTED[case]
    path = _crafted(tmp_path, **changes)
    with pytest.raises(FamilyFormatError) as excinfo:
        load_sae(path, family="clipscope")
    one_line_error(excinfo, str(path), fragment)


def test_missing_state_keys_are_refused(tmp_path):
    path = tmp_path / "1.pt"
    torch.save({"model_state_dict": {"enc": torch.zeros(128, 256)}, "k": 16}, path)
    with pytest.raises(FamilyFormatError) as excinfo:
        load_sae(path, family="clipscope")
    one_line_error(excinfo, str(path), "lacks ['pre_b', 'dec']")


def test_an_optimizer_checkpoint_from_sache_is_read_without_running_code(tmp_path):
    """Before pull_to_hf, sache's files also hold optimizer_state_dict (plain tensors and numbers): still loadable."""
    obj = torch.load(FILE, weights_only=True)
    obj["optimizer_state_dict"] = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]}
    shutil.copytree(HERE, tmp_path / "22_resid")
    torch.save(obj, tmp_path / "22_resid" / "1200013184.pt")
    assert_familys_numbers(load_sae(tmp_path / "22_resid" / "1200013184.pt"), reference(HERE))


# ---------------------------------------------------------------- a fresh file read by clipscope itself


def test_a_file_clipscope_reads_now_gives_its_numbers(tmp_path, monkeypatch):
    require_package("clipscope")
    import clipscope.sae as clipscope_sae
    from clipscope import TopKSAE

    torch.manual_seed(11)
    src = TopKSAE(k=8, n_features=256, d_in=128, device="cpu")
    (tmp_path / "11_resid").mkdir()
    torch.save(
        {"model_state_dict": src.state_dict(), "token_count": 5, "dead_latents": torch.zeros(256), "n_iter": 1,
         "log_id": "11_resid-x", "d_in": 128, "n_features": 256, "k": 8},
        tmp_path / "11_resid" / "5.pt",
    )  # fmt: skip
    monkeypatch.setattr(
        clipscope_sae, "hf_hub_download", lambda repo_id, filename, repo_type: str(tmp_path / filename)
    )
    theirs = TopKSAE.from_pretrained("11_resid/5.pt", device="cpu")
    ours = load_sae(tmp_path / "11_resid")
    assert ours.cfg.metadata.hook_name == "blocks.11.hook_resid_post"
    x = torch.randn(6, 128)
    with torch.no_grad():
        out = theirs.forward_verbose(x)
        assert (ours.encode(x) - out["latent"]).abs().max() <= 1e-5 * x.abs().max()
        assert (ours(x) - out["reconstruction"]).abs().max() <= 1e-5 * x.abs().max()
