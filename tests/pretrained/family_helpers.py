"""Shared pieces of the third-party family tests (test_pretrained_{saev,dictionary_learning,visaebench,clipscope}).

The files under tests/pretrained/producers/<family>/ were written by each family's own code (see the README
there); `reference.safetensors` beside them holds that code's own encode / decode / forward on fixed inputs.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sae_clip_plugin import steer

PRODUCERS = Path(__file__).parent / "producers"
TOY_HOOK = "blocks.3.hook_resid_post"
TOLERANCE = 1e-5  # relative to the activation scale (max |x|)


def reference(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "reference.safetensors"))


def max_differences(sae: Any, ref: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    """Max |ours - family's| / max |x| for encode, decode and forward."""
    x = ref.get(f"{prefix}x", ref["x"])  # the statistics cases may use inputs of their own
    scale = x.abs().max().item()
    with torch.no_grad():
        acts = sae.encode(x)
        decoded = sae.decode(ref[f"{prefix}feature_acts"])
        out = sae(x)
    return {
        "encode": (acts - ref[f"{prefix}feature_acts"]).abs().max().item() / scale,
        "decode": (decoded - ref["decode"]).abs().max().item() / scale if not prefix else 0.0,
        "forward": (out - ref[f"{prefix}forward"]).abs().max().item() / scale,
    }


def assert_familys_numbers(sae: Any, ref: dict[str, torch.Tensor], prefix: str = "") -> None:
    diffs = max_differences(sae, ref, prefix)
    assert max(diffs.values()) <= TOLERANCE, diffs
    assert (ref[f"{prefix}feature_acts"] != 0).any()  # the comparison is not between zeros


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Copy files to `repo path -> local file` in an offline HF cache snapshot of `repo_id` (as huggingface_hub lays out)."""
    commit = "0" * 40
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    for name, src in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, snapshot / name)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def retarget_to_toy(sae: Any, hook: str = TOY_HOOK) -> Any:
    """The fixtures are 128 wide like the bundled toy CLIP; give them the toy's hook, spec and geometry."""
    meta = sae.cfg.metadata
    selection = meta.token_selection or "all"
    meta.hook_name, meta.model_name = hook, "toy"
    meta.image_size, meta.patch_size, meta.n_tokens = 64, 8, 65
    meta.context_size = {"all": 65, "cls": 1, "patches": 64}[selection]
    return sae


def assert_splices_and_steers(toy: Any, sae: Any) -> None:
    """With its error term the spliced SAE is a no-op; steering one feature changes the output."""
    retarget_to_toy(sae)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = toy(x)
        spliced = toy.run_with_saes(x, saes=[sae], use_error_term=True)
        torch.testing.assert_close(spliced, clean, atol=1e-5, rtol=1e-5)
        _, cache = toy.run_with_cache_with_saes(x, saes=[sae], use_error_term=True)
        acts = cache[f"{TOY_HOOK}.hook_sae_acts_post"]
        feature = int(acts.abs().sum((0, 1)).argmax())
        with steer(toy, sae, {feature: 10.0 * float(acts.abs().max()) + 1.0}):
            steered = toy(x)
    assert (steered - clean).abs().max() > 1e-3


def require_package(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(
            f"the {name} package is not installed here, so no fresh file can be written with it at test time (the "
            "committed files under tests/pretrained/producers were made with it; see the README there)"
        )


def one_line_error(excinfo: Any, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
