"""Prisma SAEs written by ViT-Prisma's own trainer load and give Prisma's own numbers.

The files in tests/pretrained/producers/prisma were written by ViT-Prisma's `VisionSAETrainer.checkpoint` (see
the README there); the test-made files elsewhere prove only that our reader and our writer agree. The last
release refused every one of these files (torch's state-dict `_metadata`), which only a producer's file shows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file

from sae_clip_plugin import HookedSAEViT, steer
from sae_clip_plugin.pretrained import load_prisma_sae, load_sae, restricted_torch_load
from sae_clip_plugin.pretrained.registry import CLS_TOPK_RELEASE, VANILLA_RELEASE
from tests.pretrained.family_helpers import assert_splices_and_steers, retarget_to_toy
from tests.pretrained.test_pretrained_prisma import hf_cache  # noqa: F401 (fixture)

PRODUCED = Path(__file__).parent / "producers" / "prisma"
SAES = {  # folder -> (token selection, k)
    "vanilla": ("all", None),
    "topk_cls": ("cls", 16),
    "topk_patches": ("patches", 16),
}
RELEASES = {  # folder -> (release, sae_id, the real hub repo)
    "vanilla": (
        VANILLA_RELEASE,
        "blocks.3.hook_resid_post/l1_1e-05",
        "Prisma-Multimodal/sparse-autoencoder-clip-b-32-sae-vanilla-x64-layer-3-hook_resid_post-l1-1e-05",
    ),
    "topk_cls": (
        CLS_TOPK_RELEASE,
        "blocks.3.hook_resid_post",
        "Prisma-Multimodal/sae-top_k-64-cls_only-layer_3-hook_resid_post",
    ),
}


def _reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(PRODUCED / name / "reference.safetensors"))


def _assert_prismas_numbers(sae, name: str) -> None:
    ref = _reference(name)
    scale = ref["x"].abs().max().item()  # "1e-5 relative to the activation scale"
    with torch.no_grad():
        acts = sae.encode(ref["x"])
        decoded = sae.decode(acts)  # after the encode, as Prisma's layer norm needs
        out = sae(ref["x"])
    torch.testing.assert_close(acts, ref["feature_acts"], atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(decoded, ref["decode"], atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(out, ref["forward"], atol=1e-5 * scale, rtol=0)
    assert (ref["feature_acts"] != 0).any()  # the comparison is not between zeros


@pytest.mark.parametrize("name", list(SAES))
def test_a_file_from_prismas_trainer_loads_with_prismas_numbers(name):
    selection, k = SAES[name]
    sae = load_prisma_sae(PRODUCED / name)
    assert sae.cfg.metadata.source_path.endswith("n_images_2600058.pt")  # not the sparsity file beside it
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.metadata.token_selection == selection
    assert sae.cfg.normalize_activations == "layer_norm"
    assert sae.cfg.architecture() == ("standard" if k is None else "topk")
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (128, 256)
    _assert_prismas_numbers(sae, name)


def test_the_pickled_config_and_state_dict_metadata_are_read():
    """The trainer pickles its VisionModelSAERunnerConfig and the module's state dict (with `_metadata`)."""
    raw = restricted_torch_load(PRODUCED / "topk_cls" / "n_images_2600058.pt")
    assert raw["cfg"].pickled_class == "vit_prisma.sae.config.VisionModelSAERunnerConfig"
    assert raw["cfg"]["cls_token_only"] is True and raw["cfg"]["activation_fn_kwargs"] == {"k": 16}
    assert raw["state_dict"]._metadata[""]["version"] is not None
    assert set(raw["state_dict"]) == {"W_enc", "b_enc", "W_dec", "b_dec"}


@pytest.mark.parametrize("name", list(RELEASES))
def test_through_sae_from_pretrained_from_the_real_repo_layout(name, hf_cache):  # noqa: F811
    release, sae_id, repo = RELEASES[name]
    snapshot = hf_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(PRODUCED / name, snapshot, ignore=shutil.ignore_patterns("reference.safetensors", "*.md"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    sae = SAE.from_pretrained(release, sae_id)
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    _assert_prismas_numbers(sae, name)
    # and by the plugin's own spec grammar, RELEASE:SAE_ID
    _assert_prismas_numbers(load_sae(f"{release}:{sae_id}"), name)


@pytest.fixture(scope="module")
def toy() -> HookedSAEViT:
    return HookedSAEViT.from_pretrained("toy")


@pytest.mark.parametrize("name", list(SAES))
def test_spliced_into_the_model_it_is_a_no_op_with_its_error_term_and_steers(name, toy):
    # the files are 128 wide like the toy CLIP but keep Prisma's ViT-B/32 config: the helper gives them its geometry
    assert_splices_and_steers(toy, load_prisma_sae(PRODUCED / name, model_name="toy"))


@pytest.mark.parametrize(
    ("name", "kind", "skip"),
    [("transcoder", "PrismaTranscoder", True), ("transcoder_relu", "PrismaReluTranscoder", False)],
)
def test_a_transcoder_from_prismas_trainer_loads_with_prismas_numbers(toy, name, kind, skip):
    """TopK or ReLU, layer norm, skip path on the raw input before the de-normalisation: Prisma's own forward."""
    sae = load_prisma_sae(PRODUCED / name)
    assert type(sae).__name__ == kind and sae.cfg.with_skip == skip
    assert sae.cfg.metadata.hook_name == "blocks.3.ln2.hook_normalized"
    assert sae.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"
    _assert_prismas_numbers(sae, name)
    # spliced from ln2.hook_normalized to hook_mlp_out: a no-op with the error term; without it, the MLP's output is
    # Prisma's forward of the block's normalised input (checked against Prisma's own numbers above)
    t_in, t_out = sae.cfg.metadata.hook_name, sae.cfg.metadata.hook_name_out
    sae = retarget_to_toy(load_prisma_sae(PRODUCED / name), hook=t_in)  # 128 wide, like the toy's blocks
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean, cache = toy.run_with_cache(x, names_filter=[t_in, t_out])
        torch.testing.assert_close(
            toy.run_with_saes(x, saes=sae, use_error_term=True), clean, atol=1e-5, rtol=0
        )
        prisma_out = sae(cache[t_in])
        by_hand = toy.run_with_hooks(x, fwd_hooks=[(t_out, lambda t, hook: prisma_out)])
        torch.testing.assert_close(
            toy.run_with_saes(x, saes=sae, use_error_term=False), by_hand, atol=1e-5, rtol=0
        )
        # steering one feature moves hook_mlp_out by Prisma's decode of the change, de-normalised: (f' - f) W_dec * std
        f = sae.encode(cache[t_in])
        feature = int(f.abs().sum((0, 1)).argmax())
        edited = f.clone()
        edited[..., feature] = 3.0
        std = cache[t_in].std(
            -1, keepdim=True
        )  # Prisma's de-normalisation: unbiased std of the input, no eps
        moved = cache[t_out] + ((edited - f) @ sae.W_dec) * std
        expected = toy.run_with_hooks(x, fwd_hooks=[(t_out, lambda t, hook: moved)])
        with steer(toy, sae, {feature: 3.0}):
            steered = toy(x)
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    assert (steered - clean).abs().max() > 1e-3
    # ... and the weights also read as plain data
    state = restricted_torch_load(PRODUCED / name / "n_images_2600058.pt")["state_dict"]
    assert set(state) == {"W_dec", "W_enc", "b_enc", "b_dec", "b_dec_out"} | ({"W_skip"} if skip else set())
