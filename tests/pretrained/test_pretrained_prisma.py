"""Prisma checkpoints -> sae_lens SAEs, loaded offline from a local Hugging Face cache.

Fixtures are written in the exact Prisma layout: a `.pt` pickle that is either a bare state dict
or {"cfg": <vit_prisma.sae.config.VisionModelSAERunnerConfig>, "state_dict": ...} (the class comes
from a throw-away `vit_prisma` package that is gone again before loading), plus config.json.
Outputs are checked against a hand-written float64 Prisma forward.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from sae_lens import SAE
from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

from sae_clip_plugin.pretrained import (
    CELEBA_RELEASE,
    CLS_TOPK_RELEASE,
    VANILLA_RELEASE,
    UnsafePickleError,
    load_prisma_sae,
    prisma_huggingface_loader,
    register_pretrained_releases,
)

D_IN, D_SAE = 16, 64

FAKE_VIT_PRISMA = {
    "vit_prisma/__init__.py": "",
    "vit_prisma/configs/__init__.py": "",
    "vit_prisma/configs/HookedViTConfig.py": """
        from dataclasses import dataclass
        import torch

        @dataclass
        class HookedViTConfig:
            n_layers: int = 12
            d_model: int = 768
            patch_size: int = 32
            dtype: torch.dtype = torch.float32
    """,
    "vit_prisma/sae/__init__.py": "",
    "vit_prisma/sae/config.py": """
        from dataclasses import dataclass, field
        from typing import Any, Optional
        import torch
        from vit_prisma.configs.HookedViTConfig import HookedViTConfig

        @dataclass
        class VisionModelSAERunnerConfig:
            model_name: str = "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
            vit_model_cfg: Optional[HookedViTConfig] = None
            hook_point_layer: int = 9
            layer_subtype: str = "hook_resid_post"
            context_size: int = 50
            use_patches_only: bool = False
            cls_token_only: bool = False
            d_in: int = 16
            expansion_factor: int = 4
            activation_fn_str: str = "relu"
            activation_fn_kwargs: dict = field(default_factory=dict)
            normalize_activations: str = "layer_norm"
            l1_coefficient: float = 1e-5
            device: Any = "cpu"
            dtype: torch.dtype = torch.float32

            def __post_init__(self):
                self.hook_point = f"blocks.{self.hook_point_layer}.{self.layer_subtype}"
                self.d_sae = self.d_in * self.expansion_factor
                self.device = torch.device(self.device)
    """,
}


def _prisma_cfg_object(tmp_path: Path, **fields):
    """Build a VisionModelSAERunnerConfig from a fake vit_prisma package; the package is removed after."""
    root = tmp_path / f"fake_pkgs_{uuid.uuid4().hex[:6]}"
    for rel, src in FAKE_VIT_PRISMA.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(src))
    sys.path.insert(0, str(root))
    try:
        importlib.invalidate_caches()
        config_mod = importlib.import_module("vit_prisma.sae.config")
        vit_cfg_mod = importlib.import_module("vit_prisma.configs.HookedViTConfig")
        return config_mod.VisionModelSAERunnerConfig(vit_model_cfg=vit_cfg_mod.HookedViTConfig(), **fields)
    finally:
        sys.path.remove(str(root))


@pytest.fixture
def forget_vit_prisma():
    """Unimport the fake vit_prisma after pickling, so loading must work without it."""
    yield
    for name in [n for n in sys.modules if n == "vit_prisma" or n.startswith("vit_prisma.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _drop_vit_prisma() -> None:
    for name in [n for n in sys.modules if n == "vit_prisma" or n.startswith("vit_prisma.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    assert importlib.util.find_spec("vit_prisma") is None


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5,
        "b_dec": 0.1 * torch.randn(D_IN, generator=g),
    }


def _config_json(**overrides) -> dict:
    """A config.json as Prisma writes it (dtype/device as {"__type__", "value"} objects)."""
    cfg = {
        "model_class_name": "HookedViT",
        "model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
        "hook_point_layer": 9,
        "layer_subtype": "hook_resid_post",
        "context_size": 50,
        "use_patches_only": False,
        "cls_token_only": False,
        "d_in": D_IN,
        "expansion_factor": D_SAE // D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {},
        "normalize_activations": "layer_norm",
        "l1_coefficient": 1e-5,
        "lr": 4e-4,
        "dataset_name": "imagenet1k",
        "device": {"__type__": "torch.device", "value": "cuda"},
        "dtype": {"__type__": "torch.dtype", "value": "torch.float32"},
        "some_future_key": {"nested": [1, 2, 3]},
    }
    cfg.update(overrides)
    return cfg


def _put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, object]) -> Path:
    """Write files into `models--org--name/snapshots/<hash>/` with refs/main, as huggingface_hub does."""
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if name.endswith(".json"):
            (snapshot / name).write_text(json.dumps(content))
        else:
            torch.save(content, snapshot / name)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty offline Hugging Face cache under tmp_path (constants are read at import, so patch them)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    register_pretrained_releases()
    return cache


def prisma_reference(x: torch.Tensor, w: dict[str, torch.Tensor], k: int | None, layer_norm: bool = True):
    """Prisma's forward by hand, in float64: features and reconstruction."""
    x = x.double()
    w = {n: t.double() for n, t in w.items()}
    if layer_norm:
        mean = x.mean(-1, keepdim=True)
        std = (x - mean).std(-1, keepdim=True)  # torch.std: unbiased, as in vit_prisma
        x_n = (x - mean) / (std + 1e-5)
    else:
        mean, std, x_n = 0.0, 1.0, x
    pre = (x_n - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if k is None:
        f = pre.relu()
    else:
        values, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    x_hat = (f @ w["W_dec"] + w["b_dec"]) * std + mean
    return f, x_hat


def _activations(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # per-token offsets and scales, so the layer-norm matters
    return 3.0 * torch.randn(2, 5, D_IN, generator=g) * torch.rand(2, 5, 1, generator=g) + 2.0


CASES = {
    # vanilla x64: plain state dict + config.json, ReLU, all tokens
    "vanilla-standard": dict(
        release=VANILLA_RELEASE,
        sae_id="blocks.9.hook_resid_post/l1_1e-05",
        repo="Prisma-Multimodal/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-9-hook_resid_post-l1-1e-05",
        filename="n_images_2600058.pt",
        pickled_cfg=False,
        config=_config_json(),
        k=None,
        hook="blocks.9.hook_resid_post",
        selection="all",
        context=50,
    ),
    # CelebA TopK: {"cfg": VisionModelSAERunnerConfig, "state_dict"} + config.json, patches only
    "celeba-topk": dict(
        release=CELEBA_RELEASE,
        sae_id="blocks.11.hook_resid_post",
        repo="Prisma-Multimodal/celeba-sae-top_k-64-patches_only-layer_11-hook_resid_post-128-89",
        filename="weights.pt",
        pickled_cfg=True,
        config=_config_json(
            hook_point_layer=11,
            activation_fn_str="topk",
            activation_fn_kwargs={"k": 8},
            use_patches_only=True,
        ),
        k=8,
        hook="blocks.11.hook_resid_post",
        selection="patches",
        context=49,
    ),
    # CLS-only TopK whose config lives only inside the pickle (no config.json)
    "cls-topk-pickled-cfg-only": dict(
        release=CLS_TOPK_RELEASE,
        sae_id="blocks.4.hook_mlp_out",
        repo="Prisma-Multimodal/sae-top_k-64-cls_only-layer_4-hook_mlp_out",
        filename="weights.pt",
        pickled_cfg=True,
        config=None,
        k=5,
        hook="blocks.4.hook_mlp_out",
        selection="cls",
        context=1,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_from_pretrained_matches_prisma_forward(name, hf_cache, tmp_path, forget_vit_prisma):
    case = CASES[name]
    weights = _weights(seed=len(name))
    if case["pickled_cfg"]:
        layer, hook = int(case["hook"].split(".")[1]), case["hook"].split(".")[2]
        cfg_obj = _prisma_cfg_object(
            tmp_path,
            hook_point_layer=layer,
            layer_subtype=hook,
            activation_fn_str="topk",
            activation_fn_kwargs={"k": case["k"]},
            cls_token_only=case["selection"] == "cls",
            use_patches_only=case["selection"] == "patches",
        )
        payload = {"cfg": cfg_obj, "state_dict": weights}
    else:
        payload = dict(weights)
    files = {case["filename"]: payload}
    if case["config"] is not None:
        files["config.json"] = case["config"]
    _put_in_hf_cache(hf_cache, case["repo"], files)
    _drop_vit_prisma()

    sae = SAE.from_pretrained(case["release"], case["sae_id"])

    assert "vit_prisma" not in sys.modules
    assert sae.cfg.architecture() == ("standard" if case["k"] is None else "topk")
    assert sae.cfg.normalize_activations == "layer_norm"
    meta = sae.cfg.metadata
    assert meta.hook_name == case["hook"]
    assert meta.model_name == "open_clip:ViT-B-32/datacomp_xl_s13b_b90k"
    assert meta.token_selection == case["selection"]
    assert meta.context_size == case["context"]
    assert (meta.image_size, meta.patch_size, meta.n_tokens) == (224, 32, 50)
    assert meta.sae_lens_version

    x = _activations()
    f_ref, x_hat_ref = prisma_reference(x, weights, case["k"])
    with torch.no_grad():
        f = sae.encode(x)
        x_hat = sae(x)
    torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_hat.double(), x_hat_ref, atol=1e-5, rtol=0)
    if case["k"] is not None:
        assert int((f != 0).sum(-1).max()) <= case["k"]

    # sae_lens' config-only path goes through our config getter
    cfg = load_sae_config_from_huggingface(case["release"], case["sae_id"])
    assert (cfg["d_in"], cfg["d_sae"], cfg["metadata"]["hook_name"]) == (D_IN, D_SAE, case["hook"])
    assert cfg["architecture"] == sae.cfg.architecture()


def test_layer_norm_is_what_the_reference_checks(hf_cache):
    """Sanity of the test itself: without the normalisation the reference would not match."""
    weights = _weights(seed=3)
    x = _activations()
    _, with_ln = prisma_reference(x, weights, None, layer_norm=True)
    _, without_ln = prisma_reference(x, weights, None, layer_norm=False)
    assert (with_ln - without_ln).abs().max() > 1e-2


def test_load_prisma_sae_local_folder_and_config_defaults(tmp_path):
    """An old, sparse config (no normalize key, layer as a list, `cls_token`) loads with vit_prisma's defaults."""
    folder = tmp_path / "old_sae"
    folder.mkdir()
    weights = _weights(seed=7)
    torch.save(dict(weights), folder / "n_images_100.pt")
    old_cfg = {
        "model_name": "some/other-vit",
        "hook_point_layer": [3],
        "cls_token": True,
        "unknown": object.__name__,
    }
    (folder / "config.json").write_text(json.dumps(old_cfg))

    sae = load_prisma_sae(folder)

    assert sae.cfg.normalize_activations == "layer_norm"  # VisionModelSAERunnerConfig's default
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.metadata.token_selection == "cls"
    assert sae.cfg.metadata.model_name == "some/other-vit"
    assert sae.cfg.metadata.prisma_config["unknown"] == "object"
    x = _activations()
    _, x_hat_ref = prisma_reference(x, weights, None, layer_norm=True)
    with torch.no_grad():
        torch.testing.assert_close(sae(x).double(), x_hat_ref, atol=1e-5, rtol=0)

    # a config without any layer: the hook must be given
    (folder / "config.json").write_text(json.dumps({"activation_fn_str": "relu"}))
    with pytest.raises(ValueError, match="hook_name"):
        load_prisma_sae(folder)
    sae = load_prisma_sae(
        folder / "n_images_100.pt", hook_name="blocks.5.hook_mlp_out", token_selection="patches"
    )
    assert (sae.cfg.metadata.hook_name, sae.cfg.metadata.token_selection) == (
        "blocks.5.hook_mlp_out",
        "patches",
    )


# ---------------------------------------------------------------- malicious pickles


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Popens:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize(
    ("payload_cls", "global_name"),
    [(_RunsShell, "system"), (_Evals, "builtins.eval"), (_Popens, "subprocess.Popen")],
)
def test_malicious_pickle_is_refused_and_runs_nothing(payload_cls, global_name, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"cfg": payload_cls(marker), "state_dict": _weights(0)}, folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(_config_json()))

    with pytest.raises(UnsafePickleError, match=global_name.replace(".", r"\.")):
        load_prisma_sae(folder)
    assert not marker.exists()


def test_malicious_pickle_through_from_pretrained(hf_cache, tmp_path):
    marker = tmp_path / "pwned"
    repo = "Prisma-Multimodal/sae-top_k-64-cls_only-layer_2-hook_resid_post"
    _put_in_hf_cache(hf_cache, repo, {"weights.pt": {"cfg": _RunsShell(marker), "state_dict": _weights(1)}})
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        SAE.from_pretrained(CLS_TOPK_RELEASE, "blocks.2.hook_resid_post")
    assert not marker.exists()


def test_unregistered_repo_and_weight_file_fallback(hf_cache):
    """Any Prisma repo loads with converter=...; a registered repo whose weights file differs is resolved."""
    weights = _weights(seed=11)
    repo = "Prisma-Multimodal/celeba-sae-top_k-64-patches_only-layer_9-hook_resid_post-64-80"
    config = _config_json(activation_fn_str="topk", activation_fn_kwargs={"k": 4}, use_patches_only=True)
    _put_in_hf_cache(hf_cache, repo, {"weights.pt": dict(weights), "config.json": config})
    sae = SAE.from_pretrained(repo, "weights.pt", converter=prisma_huggingface_loader)
    assert (sae.cfg.metadata.hook_name, sae.cfg.metadata.token_selection, sae.cfg.k) == (
        "blocks.9.hook_resid_post",
        "patches",
        4,
    )
    x = _activations(seed=1)
    _, x_hat_ref = prisma_reference(x, weights, 4)
    with torch.no_grad():
        torch.testing.assert_close(sae(x).double(), x_hat_ref, atol=1e-5, rtol=0)

    # the registry expects n_images_2600058.pt; the only cached .pt is used instead
    vanilla = "Prisma-Multimodal/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-0-hook_mlp_out-l1-0.0001"
    cfg = _config_json(hook_point_layer=0, layer_subtype="hook_mlp_out", l1_coefficient=1e-4)
    _put_in_hf_cache(hf_cache, vanilla, {"sae_final.pt": dict(weights), "config.json": cfg})
    sae = SAE.from_pretrained(VANILLA_RELEASE, "blocks.0.hook_mlp_out/l1_0.0001")
    assert sae.cfg.metadata.filename == "sae_final.pt"
    torch.testing.assert_close(sae.W_enc, weights["W_enc"])

    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        SAE.from_pretrained(VANILLA_RELEASE, "blocks.5.hook_mlp_out/l1_0.0001")  # not cached


def test_an_unreachable_hub_fails_at_once_with_the_true_reason(hf_cache, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: one connection attempt, then the cache only (no retried requests),
    and the message names the host that cannot be reached, not HF_HUB_OFFLINE."""
    import huggingface_hub
    from huggingface_hub import constants

    from sae_clip_plugin import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    hub.connection_problem.cache_clear()

    def no_listing(*args, **kwargs):
        raise AssertionError("the hub listing was requested although the hub cannot be reached")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_listing)
    with pytest.raises(FileNotFoundError, match=r"127\.0\.0\.1 cannot be reached") as err:
        SAE.from_pretrained(VANILLA_RELEASE, "blocks.5.hook_mlp_out/l1_0.0001")
    assert "HF_HUB_OFFLINE is set" not in str(err.value)
    hub.connection_problem.cache_clear()
