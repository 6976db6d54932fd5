"""Every Prisma format and family: trainer folders, activations and post-activations, old and new configs."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE

from sae_clip_plugin.pretrained import load_prisma_sae
from sae_clip_plugin.pretrained.registry import SPATIAL_RELEASE, list_pretrained
from tests.pretrained.test_pretrained_prisma import (
    D_IN,
    D_SAE,
    _activations,
    _config_json,
    _put_in_hf_cache,
    _weights,
    hf_cache,  # noqa: F401 (fixture)
    prisma_reference,
)


def _current_format(cfg: dict) -> dict:
    """The config.json Prisma writes today: dtype/device as plain strings instead of {"__type__", "value"}."""
    return {**cfg, "device": "cuda", "dtype": "torch.float32"}


CONFIG_FORMATS = {"2024-11": lambda cfg: cfg, "current": _current_format}


def _folder(tmp_path, name: str, weights: dict, config: dict, files: dict | None = None):
    folder = tmp_path / name
    folder.mkdir()
    torch.save(weights, folder / "n_images_2600058.pt")
    for extra, content in (files or {}).items():
        torch.save(content, folder / extra)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_a_folder_as_prismas_trainer_writes_it_loads(tmp_path, fmt):
    """Beside n_images_N.pt the trainer writes n_images_N_log_feature_sparsity.pt: not a weights file."""
    weights = _weights(1)
    folder = _folder(
        tmp_path,
        "trained",
        weights,
        CONFIG_FORMATS[fmt](_config_json()),
        files={"n_images_2600058_log_feature_sparsity.pt": torch.full((D_SAE,), -3.0)},
    )
    sae = load_prisma_sae(folder)
    assert sae.cfg.metadata.source_path.endswith("n_images_2600058.pt")
    x = _activations()
    with torch.no_grad():
        torch.testing.assert_close(sae(x).double(), prisma_reference(x, weights, None)[1], atol=1e-5, rtol=0)


def test_a_hub_snapshot_with_the_sparsity_file_loads(hf_cache):  # noqa: F811
    repo = "Prisma-Multimodal/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-3-hook_mlp_out-l1-5e-05"
    weights = _weights(2)
    cfg = _config_json(hook_point_layer=3, layer_subtype="hook_mlp_out", l1_coefficient=5e-5)
    _put_in_hf_cache(
        hf_cache,
        repo,
        {
            "sae_final.pt": weights,
            "sae_final_log_feature_sparsity.pt": torch.zeros(D_SAE),
            "config.json": cfg,
        },
    )
    sae = SAE.from_pretrained("prisma-clip-vit-b-32-vanilla-x64", "blocks.3.hook_mlp_out/l1_5e-05")
    assert sae.cfg.metadata.filename == "sae_final.pt"
    torch.testing.assert_close(sae.W_dec, weights["W_dec"])


@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_tanh_relu_loads_and_matches_prismas_forward(tmp_path, fmt):
    weights = _weights(3)
    folder = _folder(
        tmp_path, "tanh", weights, CONFIG_FORMATS[fmt](_config_json(activation_fn_str="tanh-relu"))
    )
    sae = load_prisma_sae(folder)
    x = _activations().double()
    # Prisma: f = tanh(relu(pre)) on the layer-normed input (vit_prisma.sae.get_activation_fn)
    mean = x.mean(-1, keepdim=True)
    std = (x - mean).std(-1, keepdim=True)
    x_n = (x - mean) / (std + 1e-5)
    w = {k: v.double() for k, v in weights.items()}
    f_ref = torch.tanh(torch.relu((x_n - w["b_dec"]) @ w["W_enc"] + w["b_enc"]))
    x_hat_ref = (f_ref @ w["W_dec"] + w["b_dec"]) * std + mean
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x.float()).double(), f_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(sae(x.float()).double(), x_hat_ref, atol=1e-5, rtol=0)
    # and it round-trips through sae_lens' own folder format
    sae.save_model(tmp_path / "saved")
    again = SAE.load_from_disk(tmp_path / "saved")
    assert type(again).__name__ == "TanhReluSAE"
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x.float()), sae.encode(x.float()))


@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_a_config_without_normalize_activations_takes_prismas_default(tmp_path, fmt):
    cfg = CONFIG_FORMATS[fmt](_config_json())
    del cfg["normalize_activations"]
    sae = load_prisma_sae(_folder(tmp_path, "old", _weights(4), cfg))
    assert sae.cfg.normalize_activations == "layer_norm"


@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_jumprelu_with_log_threshold_loads(tmp_path, fmt):
    weights = {**_weights(5), "log_threshold": torch.linspace(-2, 0.5, D_SAE)}
    sae = load_prisma_sae(
        _folder(tmp_path, "jump", weights, CONFIG_FORMATS[fmt](_config_json(architecture="jumprelu")))
    )
    assert sae.cfg.architecture() == "jumprelu"
    x = _activations().double()
    mean = x.mean(-1, keepdim=True)
    std = (x - mean).std(-1, keepdim=True)
    pre = ((x - mean) / (std + 1e-5) - weights["b_dec"].double()) @ weights["W_enc"].double() + weights[
        "b_enc"
    ].double()
    f_ref = pre * (pre > weights["log_threshold"].double().exp())
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x.float()).double(), f_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("config", "extra", "message"),
    [
        ({"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4, "postact_fn": "Identity()"}}, {},
         "only the default ReLU post-activation"),
        ({"is_transcoder": True, "activation_fn_str": "jumprelu"}, {},
         r"transcoders with activation 'jumprelu' are not supported \(TopK .* and ReLU are\)"),
        ({}, {"W_skip": torch.zeros(D_IN, D_IN)}, r"transcoder SAE state dict lacks \['b_dec_out'\]"),
        ({"activation_fn_str": "softplus"}, {}, "supported: 'relu', 'topk', 'tanh-relu'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_what_sae_lens_cannot_represent_is_refused_with_the_alternative(
    tmp_path, config, extra, message, fmt
):
    folder = _folder(tmp_path, "bad", {**_weights(6), **extra}, CONFIG_FORMATS[fmt](_config_json(**config)))
    with pytest.raises((ValueError, NotImplementedError), match=message):
        load_prisma_sae(folder)


@pytest.mark.parametrize("fmt", list(CONFIG_FORMATS))
def test_topk_with_an_explicit_relu_postact_loads(tmp_path, fmt):
    cfg = CONFIG_FORMATS[fmt](
        _config_json(activation_fn_str="topk", activation_fn_kwargs={"k": 4, "postact_fn": "ReLU()"})
    )
    assert load_prisma_sae(_folder(tmp_path, "topk", _weights(7), cfg)).cfg.k == 4


def test_spatial_max_family_is_registered_and_loads(hf_cache):  # noqa: F811
    rows = [r for r in list_pretrained() if r["release"] == SPATIAL_RELEASE]
    assert {r["layer"] for r in rows} == {7, 8, 9, 11}
    assert {r["token_selection"] for r in rows} == {"patches"}
    row = next(r for r in rows if r["layer"] == 8)
    assert (
        row["repo_id"]
        == "Prisma-Multimodal/imagenet-sweep-vanilla-x64-Spatial_max_8-hook_resid_post-965.125-99"
    )
    weights = _weights(8)
    cfg = _config_json(hook_point_layer=8, use_patches_only=True)
    _put_in_hf_cache(hf_cache, row["repo_id"], {"weights.pt": weights, "config.json": cfg})
    sae = SAE.from_pretrained(SPATIAL_RELEASE, "blocks.8.hook_resid_post")
    assert (sae.cfg.metadata.hook_name, sae.cfg.metadata.token_selection) == (
        "blocks.8.hook_resid_post",
        "patches",
    )
    torch.testing.assert_close(sae.W_enc, weights["W_enc"])
