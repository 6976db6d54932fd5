"""saev SAE files (one JSON header line + torch.save) load with saev's own numbers, from the hub layout and locally."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.pretrained import fold_norm_stats, load_sae
from sae_clip_plugin.pretrained.family_base import FamilyFormatError
from sae_clip_plugin.pretrained.saev import CLIP_RELEASE, CLIP_REPO
from tests.pretrained.family_helpers import (
    PRODUCERS,
    assert_familys_numbers,
    assert_splices_and_steers,
    max_differences,
    one_line_error,
    put_in_hf_cache,
    reference,
    require_package,
)
from tests.pretrained.test_pretrained_prisma import hf_cache  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
HERE = PRODUCERS / "saev"
CASES = {  # folder -> (file inside it, architecture, b_dec subtracted at encode)
    "legacy_relu": ("sae.pt", "standard", True),
    "schema5_relu": ("sae.pt", "standard", False),
    "schema5_topk": ("sae.pt", "raw_topk", False),
    "schema5_batchtopk": ("layer_3/r0x1abcd/sae.pt", "jumprelu", False),
}


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing-statistics warning has its own test
        return load_sae(path, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_a_file_written_by_saev_loads_with_saevs_numbers(name):
    rel, architecture, subtract = CASES[name]
    sae = _load(HERE / name / rel)
    assert sae.cfg.architecture() == architecture
    assert sae.cfg.apply_b_dec_to_input is subtract
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (128, 256)
    meta = sae.cfg.metadata
    assert meta.family == "saev" and meta.token_selection == "patches"
    assert meta.input_normalisation["folded"] is False
    assert meta.source["b_dec_subtracted_at_encode"] is subtract
    if name == "schema5_batchtopk":  # saev's multi-checkpoint layout names the block: layer_<N>/<run>/sae.pt
        assert meta.hook_name == "blocks.3.hook_resid_post"
    ref = reference(HERE / name)
    assert_familys_numbers(sae, ref)
    if name == "schema5_topk":  # saev keeps negative top-k values; sae_lens' TopK would zero them
        assert (ref["feature_acts"] < 0).any()


@pytest.mark.parametrize("name", list(CASES))
def test_normalisation_statistics_fold_exactly(name):
    """saev's code on (x - mean) / std, de-normalised, equals our SAE with the statistics folded in, on raw x."""
    ref = reference(HERE / name)
    stats = {"mean": ref["norm_mean"], "std": float(ref["norm_std"])}
    sae = load_sae(HERE / name / CASES[name][0], norm_stats=stats)
    assert sae.cfg.metadata.input_normalisation["folded"] is True
    assert_familys_numbers(sae, ref, prefix="norm_")
    # the same after SAE.from_pretrained: fold_norm_stats on a loaded SAE, once
    later = fold_norm_stats(_load(HERE / name / CASES[name][0]), stats)
    assert max(max_differences(later, ref, prefix="norm_").values()) <= 1e-5
    with pytest.raises(ValueError, match="already"):
        fold_norm_stats(later, stats)


def test_missing_statistics_warn_and_name_the_argument():
    with pytest.warns(UserWarning, match="norm_stats="):
        load_sae(HERE / "legacy_relu" / "sae.pt")


def test_through_from_pretrained_from_the_real_repo_layout(hf_cache):  # noqa: F811
    put_in_hf_cache(hf_cache, CLIP_REPO, {"sae.pt": HERE / "legacy_relu" / "sae.pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.from_pretrained(CLIP_RELEASE, "blocks.10.hook_resid_post")
        by_name = load_sae(f"{CLIP_RELEASE}:blocks.10.hook_resid_post")
    meta = sae.cfg.metadata
    assert meta.model_name == "open_clip:ViT-B-16/openai"
    assert (meta.hook_name, meta.token_selection, meta.context_size, meta.n_tokens) == (
        "blocks.10.hook_resid_post",
        "patches",
        196,
        197,
    )
    assert meta.weight_processing == {
        "fold_ln": False,
        "center_writing_weights": False,
        "fold_value_biases": False,
    }
    assert meta.source["repo_id"] == CLIP_REPO
    for loaded in (sae, by_name):
        assert_familys_numbers(loaded, reference(HERE / "legacy_relu"))


def test_the_release_resolves_the_repo_and_file():
    assert get_repo_id_and_folder_name(CLIP_RELEASE, "blocks.10.hook_resid_post") == (CLIP_REPO, "sae.pt")
    from sae_clip_plugin.pretrained import list_pretrained

    row = next(r for r in list_pretrained() if r["release"] == CLIP_RELEASE)
    assert (row["model"], row["hook_name"], row["d_sae"], row["token_selection"]) == (
        "open_clip:ViT-B-16/openai",
        "blocks.10.hook_resid_post",
        24576,
        "patches",
    )


@pytest.fixture(scope="module")
def toy() -> HookedSAEViT:
    return HookedSAEViT.from_pretrained("toy")


@pytest.mark.parametrize("name", ["legacy_relu", "schema5_topk", "schema5_batchtopk"])
def test_spliced_it_is_a_no_op_with_its_error_term_and_steers(name, toy):
    assert_splices_and_steers(toy, _load(HERE / name / CASES[name][0]))


# ---------------------------------------------------------------- crafted files


def _write(path: Path, header: bytes, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(header + buffer.getvalue())
    return path


def _schema5(activation: dict, d_sae: int = 256) -> bytes:
    cfg = {"d_model": 128, "d_sae": d_sae, "activation": activation}
    return json.dumps({"schema": 5, "cfg": cfg, "commit": "x", "lib": "0.1.0"}).encode() + b"\n"


def _state(**changes) -> dict:
    g = torch.Generator().manual_seed(0)
    state = {
        "W_enc": torch.randn(128, 256, generator=g),
        "b_enc": torch.zeros(256),
        "W_dec": torch.randn(256, 128, generator=g),
        "b_dec": torch.zeros(128),
    }
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


RELU = {"cls": "Relu", "params": {"key": "relu"}}
CRAFTED = {
    "header not JSON": (b"not a header\n", _state(), "not a JSON header"),
    "bare torch.save": (b"", _state(), "no saev JSON header"),
    "NaN weights": (_schema5(RELU), _state(W_enc=torch.full((128, 256), float("nan"))), "NaN"),
    "shapes vs config": (_schema5(RELU, d_sae=512), _state(), "d_sae=512"),
    "W_dec shape": (_schema5(RELU), _state(W_dec=torch.zeros(256, 64)), "inconsistent shapes"),
    "k <= 0": (_schema5({"cls": "TopK", "params": {"key": "top-k", "top_k": 0}}), _state(), "k=0"),
    "k > d_sae": (_schema5({"cls": "TopK", "params": {"key": "top-k", "top_k": 999}}), _state(), "k=999"),
    "missing key": (_schema5(RELU), _state(b_dec=None), "lacks ['b_dec']"),
    "BatchTopK without threshold": (
        _schema5({"cls": "BatchTopK", "params": {"key": "batch-top-k", "top_k": 8}}),
        _state(),
        "activation.threshold",
    ),
    "unknown schema": (b'{"schema": 99, "cfg": {}}\n', _state(), "schema 99"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_refused_in_one_line_naming_it(case, tmp_path):
    header, state, fragment = CRAFTED[case]
    path = _write(tmp_path / "sae.pt", header, state)
    with pytest.raises(FamilyFormatError) as excinfo:
        _load(path, family="saev")  # a file whose first byte is not "{" is not recognised as saev's otherwise
    one_line_error(excinfo, str(path), fragment)


def test_a_header_longer_than_1mb_is_refused_without_reading_it_whole(tmp_path):
    path = _write(tmp_path / "sae.pt", b'{"d_vit": 128, "pad": "' + b"x" * (1 << 20) + b'"}\n', _state())
    with pytest.raises(FamilyFormatError) as excinfo:
        _load(path)
    one_line_error(excinfo, str(path), "longer than 1 MB")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = _write(tmp_path / "sae.pt", _schema5(RELU), {"W_enc": Payload()})
    with pytest.raises(FamilyFormatError, match="weights_only"):
        _load(path)


# ---------------------------------------------------------------- a fresh file from saev itself


def test_a_file_saev_writes_now_gives_its_numbers(tmp_path):
    require_package("saev")
    pytest.importorskip("beartype", reason="saev.nn imports beartype")
    from saev import config as saev_config
    from saev import nn as saev_nn

    torch.manual_seed(7)
    sae = saev_nn.SparseAutoencoder(saev_config.SparseAutoencoder(d_vit=128, exp_factor=2, seed=7))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    saev_nn.dump(str(tmp_path / "sae.pt"), sae)
    x = torch.randn(6, 128) * 4
    with torch.no_grad():
        x_hat, f_x, _ = saev_nn.load(str(tmp_path / "sae.pt"))(x)
    ours = _load(tmp_path / "sae.pt")
    with torch.no_grad():
        assert (ours.encode(x) - f_x).abs().max() <= 1e-5 * x.abs().max()
        assert (ours(x) - x_hat).abs().max() <= 1e-5 * x.abs().max()
