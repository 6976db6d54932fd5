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
from tests.pretrained.family_helpers import assert_splices_and_steers
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


def test_a_transcoder_from_prismas_trainer_loads_with_prismas_numbers(toy):
    """TopK, layer norm, skip path on the raw input before the de-normalisation: Prisma's own forward."""
    sae = load_prisma_sae(PRODUCED / "transcoder")
    assert type(sae).__name__ == "PrismaTranscoder" and sae.cfg.with_skip
    assert sae.cfg.metadata.hook_name == "blocks.3.ln2.hook_normalized"
    assert sae.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"
    _assert_prismas_numbers(sae, "transcoder")
    # splicing one hook into another is not HookedSAEViT's (it says so) ...
    with pytest.raises(ValueError, match=r"transcoders .* are not supported by HookedSAEViT"):
        toy.add_sae(load_prisma_sae(PRODUCED / "transcoder", model_name="toy"))
    # ... nor is steering through it (it would write the transcoder's output into its input hook)
    with (
        pytest.raises(ValueError, match=r"this is a transcoder .* cannot be steered"),
        steer(toy, sae, {0: 1.0}),
    ):
        pass
    # ... and the weights also read as plain data
    state = restricted_torch_load(PRODUCED / "transcoder" / "n_images_2600058.pt")["state_dict"]
    assert set(state) == {"W_skip", "W_dec", "W_enc", "b_enc", "b_dec", "b_dec_out"}
