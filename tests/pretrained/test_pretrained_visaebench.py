"""visaebench SAE folders (sae.pt + config.json / config.yaml) load with visaebench's own numbers (GenericSAE)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
import warnings

import pytest
import torch
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.pretrained import load_sae
from sae_clip_plugin.pretrained.family_base import FamilyFormatError
from sae_clip_plugin.pretrained.visaebench import CLIP_RELEASE, CLIP_REPO, CONFIGS
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
HERE = PRODUCERS / "visaebench"
CASES = {
    "batchtopk_2x_k16": "config.yaml",
    "simple_batchtopk": "config.json",
}  # overcomplete keys / simple keys


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing-statistics warning has its own test
        return load_sae(path, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_a_visaebench_folder_loads_with_generic_saes_numbers(name):
    for spec in (HERE / name, HERE / name / "sae.pt"):
        sae = _load(spec)
        assert sae.cfg.architecture() == "jumprelu" and sae.cfg.apply_b_dec_to_input is False
        meta = sae.cfg.metadata
        assert (meta.family, meta.token_selection, meta.source["activation"]) == (
            "visaebench",
            "patches",
            "batchtopk",
        )
        assert_familys_numbers(sae, reference(HERE / name))


@pytest.mark.parametrize("name", list(CASES))
def test_normalisation_statistics_fold_exactly(name):
    ref = reference(HERE / name)
    sae = load_sae(HERE / name, norm_stats={"mean": ref["norm_mean"], "std": float(ref["norm_std"])})
    assert sae.cfg.metadata.input_normalisation["folded"] is True
    assert_familys_numbers(sae, ref, prefix="norm_")


def test_statistics_from_a_norm_stats_file(tmp_path):
    """visaebench caches {"mean": [D], "std": float} as norm_stats.pt next to its activations."""
    ref = reference(HERE / "simple_batchtopk")
    torch.save({"mean": ref["norm_mean"], "std": float(ref["norm_std"])}, tmp_path / "norm_stats.pt")
    sae = load_sae(HERE / "simple_batchtopk", norm_stats=tmp_path / "norm_stats.pt")
    assert_familys_numbers(sae, ref, prefix="norm_")


def test_missing_statistics_warn_and_name_the_argument():
    with pytest.warns(UserWarning, match="norm_stats="):
        load_sae(HERE / "simple_batchtopk")


def test_a_code_exactly_at_the_threshold_is_kept_as_visaebench_keeps_it(tmp_path):
    """visaebench tests codes >= threshold, sae_lens' JumpReLU > threshold: the stored threshold is one float below."""
    folder = tmp_path / "batchtopk_8x_k64"
    folder.mkdir()
    bias = torch.zeros(256)
    bias[:3] = torch.tensor([0.5, 0.25, 0.75])
    state = {
        "encoder.weight": torch.zeros(256, 128),
        "encoder.bias": bias,
        "decoder.weight": torch.eye(256, 128),
    }
    torch.save(state, folder / "sae.pt")
    (folder / "config.json").write_text(json.dumps({"architecture": "batchtopk", "k": 64, "threshold": 0.5}))
    with torch.no_grad():
        codes = _load(folder).encode(torch.randn(2, 128))
    assert codes[:, :3].tolist() == [[0.5, 0.0, 0.75]] * 2  # relu(pre) * (pre >= 0.5)


def test_through_from_pretrained_from_the_real_repo_layout(hf_cache):  # noqa: F811
    files = {
        "batchtopk_16x_k128/sae.pt": HERE / "batchtopk_2x_k16" / "sae.pt",
        "batchtopk_16x_k128/config.yaml": HERE / "batchtopk_2x_k16" / "config.yaml",
        "batchtopk_8x_k64/sae.pt": HERE / "simple_batchtopk" / "sae.pt",
        "batchtopk_8x_k64/config.json": HERE / "simple_batchtopk" / "config.json",
    }
    put_in_hf_cache(hf_cache, CLIP_REPO, files)
    for sub, name in (("batchtopk_16x_k128", "batchtopk_2x_k16"), ("batchtopk_8x_k64", "simple_batchtopk")):
        sae_id = f"blocks.11.hook_resid_post/{sub}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sae = SAE.from_pretrained(CLIP_RELEASE, sae_id)
            by_name = load_sae(f"{CLIP_RELEASE}:{sae_id}")
        meta = sae.cfg.metadata
        assert meta.model_name == "hf:openai/clip-vit-base-patch16"
        assert (meta.hook_name, meta.token_selection, meta.context_size) == (
            "blocks.11.hook_resid_post",
            "patches",
            196,
        )
        for loaded in (sae, by_name):
            assert_familys_numbers(loaded, reference(HERE / name))


def test_the_release_resolves_the_repo_and_subfolders():
    assert len(CONFIGS) == 12
    sae_id = "blocks.11.hook_resid_post/batchtopk_16x_k128"
    assert get_repo_id_and_folder_name(CLIP_RELEASE, sae_id) == (CLIP_REPO, "batchtopk_16x_k128")
    from sae_clip_plugin.pretrained import list_pretrained

    row = next(r for r in list_pretrained() if r["sae_id"] == sae_id)
    assert (row["model"], row["d_sae"], row["k"]) == ("hf:openai/clip-vit-base-patch16", 768 * 16, 128)


@pytest.fixture(scope="module")
def toy() -> HookedSAEViT:
    return HookedSAEViT.from_pretrained("toy")


@pytest.mark.parametrize("name", list(CASES))
def test_spliced_it_is_a_no_op_with_its_error_term_and_steers(name, toy):
    assert_splices_and_steers(toy, _load(HERE / name))


# ---------------------------------------------------------------- crafted files


def _crafted(tmp_path, state_changes: dict, config: dict | None = None):
    folder = tmp_path / "batchtopk_8x_k64"
    shutil.copytree(HERE / "simple_batchtopk", folder)
    state = torch.load(folder / "sae.pt", weights_only=True)
    state.update(state_changes)
    torch.save({k: v for k, v in state.items() if v is not None}, folder / "sae.pt")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


CRAFTED = {
    "a dictionary_learning ae.pt": ({"decoder.weight": torch.zeros(128, 256)}, None, "not both [H, D]"),
    "NaN weights": ({"encoder.weight": torch.full((256, 128), float("nan"))}, None, "NaN"),
    "k <= 0": ({}, {"architecture": "topk", "k": 0}, "k=0"),
    "k > d_sae": ({}, {"architecture": "topk", "k": 4096}, "k=4096"),
    "missing key": ({"encoder.bias": None}, None, "lacks ['encoder.bias']"),
    "shapes vs config": ({}, {"architecture": "batchtopk", "input_dim": 768}, "input_dim=768"),
    "unknown activation": ({}, {"architecture": "gated"}, "'gated' is not supported"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_refused_in_one_line_naming_it(case, tmp_path):
    state_changes, config, fragment = CRAFTED[case]
    folder = _crafted(tmp_path, state_changes, config)
    with pytest.raises(FamilyFormatError) as excinfo:
        _load(folder)
    one_line_error(excinfo, str(folder / "sae.pt"), fragment)


def test_a_config_that_is_not_yaml_is_refused(tmp_path):
    folder = tmp_path / "x"
    shutil.copytree(HERE / "batchtopk_2x_k16", folder)
    (folder / "config.yaml").write_text("architecture: [unclosed\n")
    with pytest.raises(FamilyFormatError) as excinfo:
        _load(folder, family="visaebench")
    one_line_error(excinfo, "config.yaml", "not valid YAML")


# ---------------------------------------------------------------- a fresh file from overcomplete + visaebench


def test_a_file_overcomplete_writes_now_gives_visaebenchs_numbers(tmp_path, monkeypatch):
    require_package("visaebench")
    require_package("overcomplete")
    import importlib.util

    root = os.path.dirname(importlib.util.find_spec("overcomplete").origin)
    package = types.ModuleType(
        "overcomplete"
    )  # its __init__ imports plotting libraries the SAE does not need
    package.__path__ = [root]
    monkeypatch.setitem(sys.modules, "overcomplete", package)
    from overcomplete.sae.batchtopk_sae import BatchTopKSAE
    from visaebench.hub import load_sae as visaebench_load_sae

    torch.manual_seed(9)
    oc = BatchTopKSAE(input_shape=128, nb_concepts=256, top_k=16 * 8)
    oc(torch.randn(8, 128))  # one training-mode pass sets the running threshold
    state = oc.state_dict()
    state["_running_threshold"] = oc.running_threshold.detach()
    torch.save(state, tmp_path / "sae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "batchtopk", "k": 16}))
    theirs = visaebench_load_sae(str(tmp_path), device="cpu")
    ours = _load(tmp_path)
    x = torch.randn(6, 128)
    with torch.no_grad():
        codes, x_hat = theirs(x)
        assert (codes != 0).any()
        assert (ours.encode(x) - codes).abs().max() <= 1e-5 * x.abs().max()
        assert (ours(x) - x_hat).abs().max() <= 1e-5 * x.abs().max()
