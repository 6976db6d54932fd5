"""dictionary_learning run folders (trainer_<i>/ae.pt + config.json) load with the package's own numbers.

The package (and sae-for-vlm, which vendors it) has no hub release we know of, so from_pretrained is checked
with an explicit converter on a hub repo laid out as trainSAE writes (the repo id is a stand-in).
"""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import sys
import types
import warnings

import pytest
import torch
from sae_lens import SAE

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.pretrained import load_sae
from sae_clip_plugin.pretrained.families import dictionary_learning_huggingface_loader
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
HERE = PRODUCERS / "dictionary_learning"
CASES = {  # folder -> (dict_class, architecture, apply_b_dec_to_input)
    "batch_top_k": ("BatchTopKSAE", "jumprelu", True),
    "matryoshka": ("MatryoshkaBatchTopKSAE", "jumprelu", True),
    "top_k": ("AutoEncoderTopK", "topk", True),
    "standard": ("AutoEncoder", "standard", True),
    "jumprelu": ("JumpReluAutoEncoder", "jumprelu", False),
}
REPO = "example-org/sae-for-vlm-clip-vit-l-336"  # stand-in: no released dictionary_learning vision SAEs are known


@pytest.mark.parametrize("name", list(CASES))
def test_a_run_folder_written_by_trainSAE_loads_with_its_numbers(name):
    dict_class, architecture, apply_b_dec = CASES[name]
    for spec in (HERE / name / "trainer_0", HERE / name / "trainer_0" / "ae.pt"):
        sae = load_sae(spec)
        assert sae.cfg.architecture() == architecture
        assert sae.cfg.apply_b_dec_to_input is apply_b_dec
        meta = sae.cfg.metadata
        assert (meta.family, meta.source["dict_class"]) == ("dictionary_learning", dict_class)
        # trainSAE was given layer=22: the output of encoder layer 22 (hidden_states[23])
        assert meta.hook_name == "blocks.22.hook_resid_post" and meta.token_selection == "cls"
        assert (
            meta.input_normalisation["stats_in_file"] is True
        )  # trainSAE folds its norm factor into the biases
        assert_familys_numbers(sae, reference(HERE / name))


def test_sae_for_vlms_spelling_of_matryoshka_loads(tmp_path):
    folder = tmp_path / "trainer_0"
    shutil.copytree(HERE / "matryoshka" / "trainer_0", folder)
    config = json.loads((folder / "config.json").read_text())
    config["trainer"]["dict_class"] = "MatroyshkaBatchTopKSAE"
    (folder / "config.json").write_text(json.dumps(config))
    assert_familys_numbers(load_sae(folder), reference(HERE / "matryoshka"))


def test_through_from_pretrained_with_the_converter_from_a_hub_layout(hf_cache):  # noqa: F811
    src = HERE / "batch_top_k" / "trainer_0"
    files = {"trainer_0/ae.pt": src / "ae.pt", "trainer_0/config.json": src / "config.json"}
    files["trainer_0/checkpoints/ae_100000.pt"] = src / "ae.pt"  # what sae-for-vlm's scripts load
    put_in_hf_cache(hf_cache, REPO, files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sae_lens: "loading from a repo id directly"
        for sae_id in ("trainer_0", "trainer_0/checkpoints/ae_100000.pt"):
            sae = SAE.from_pretrained(REPO, sae_id, converter=dictionary_learning_huggingface_loader)
            assert sae.cfg.metadata.source["repo_id"] == REPO
            assert sae.cfg.metadata.source["k"] == 16  # config.json beside it was read
            assert_familys_numbers(sae, reference(HERE / "batch_top_k"))


def test_no_release_is_registered_for_it():
    from sae_clip_plugin.pretrained import list_pretrained

    assert not [r for r in list_pretrained() if r["family"] == "dictionary_learning"]


@pytest.fixture(scope="module")
def toy() -> HookedSAEViT:
    return HookedSAEViT.from_pretrained("toy")


@pytest.mark.parametrize("name", ["batch_top_k", "top_k", "jumprelu"])
def test_spliced_it_is_a_no_op_with_its_error_term_and_steers(name, toy):
    assert_splices_and_steers(toy, load_sae(HERE / name / "trainer_0"))


# ---------------------------------------------------------------- crafted files


def _crafted(tmp_path, name: str, state_changes: dict, config_changes: dict | None = None):
    folder = tmp_path / "trainer_0"
    shutil.copytree(HERE / name / "trainer_0", folder)
    state = torch.load(folder / "ae.pt", weights_only=True)
    state.update(state_changes)
    torch.save({k: v for k, v in state.items() if v is not None}, folder / "ae.pt")
    config = json.loads((folder / "config.json").read_text())
    config["trainer"].update(config_changes or {})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


CRAFTED = {
    "decoder not transposed": (
        "batch_top_k",
        {"decoder.weight": torch.zeros(256, 128)},
        None,
        "not [F, D] and [D, F]",
    ),
    "NaN weights": ("standard", {"encoder.bias": torch.full((256,), float("nan"))}, None, "NaN"),
    "k <= 0": ("top_k", {"k": torch.tensor(0, dtype=torch.int)}, {"k": 0}, "k=0"),
    "k > d_sae": ("top_k", {"k": torch.tensor(999, dtype=torch.int)}, {"k": 999}, "k=999"),
    "k vs config": ("top_k", {}, {"k": 5}, "config.json says k=5"),
    "missing key": ("jumprelu", {"threshold": None}, None, "lacks ['threshold']"),
    "shapes vs config": ("standard", {}, {"activation_dim": 64}, "activation_dim=64"),
    "unknown class": ("standard", {}, {"dict_class": "GatedAutoEncoder"}, "not supported"),
    "group sizes": ("matryoshka", {"group_sizes": torch.tensor([1, 2])}, None, "group_sizes sum"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_refused_in_one_line_naming_it(case, tmp_path):
    name, state_changes, config_changes, fragment = CRAFTED[case]
    folder = _crafted(tmp_path, name, state_changes, config_changes)
    with pytest.raises(FamilyFormatError) as excinfo:
        load_sae(folder)
    one_line_error(excinfo, str(folder / "ae.pt"), fragment)


def test_topk_and_batchtopk_files_without_a_config_are_refused(tmp_path):
    shutil.copy(HERE / "batch_top_k" / "trainer_0" / "ae.pt", tmp_path / "ae.pt")
    with pytest.raises(FamilyFormatError) as excinfo:
        load_sae(tmp_path / "ae.pt")
    one_line_error(excinfo, "no config.json says which")


# ---------------------------------------------------------------- a fresh file from the package itself


def test_a_file_trainSAE_writes_now_gives_its_numbers(tmp_path, monkeypatch):
    require_package("dictionary_learning")
    for name in (
        "nnsight",
        "wandb",
        "datasets",
        "zstandard",
    ):  # imported at module level, unused on this path
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            stub.LanguageModel, stub.load_dataset = object, None
            monkeypatch.setitem(sys.modules, name, stub)
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.training import trainSAE
    from dictionary_learning.utils import load_dictionary

    torch.manual_seed(3)
    data = [torch.randn(64, 128) * 3 + 1 for _ in range(4)]
    cfg = dict(trainer=BatchTopKTrainer, steps=3, activation_dim=128, dict_size=256, k=16, layer=22, lm_name="x",
               device="cpu", warmup_steps=1, threshold_start_step=0)  # fmt: skip
    trainSAE(
        data=data,
        trainer_configs=[cfg],
        steps=3,
        save_dir=str(tmp_path),
        normalize_activations=True,
        device="cpu",
    )
    ae, _ = load_dictionary(str(tmp_path / "trainer_0"), device="cpu")
    x = torch.randn(6, 128) * 9
    ours = load_sae(tmp_path / "trainer_0")
    with torch.no_grad():
        assert (ours.encode(x) - ae.encode(x)).abs().max() <= 1e-5 * x.abs().max()
        assert (ours(x) - ae(x)).abs().max() <= 1e-5 * x.abs().max()
