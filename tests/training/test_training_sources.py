"""Image sources and the early, named failures on bad input."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from sae_clip_plugin.data import load_image_folder
from sae_clip_plugin.training import (
    ActivationHarvester,
    FolderSource,
    HFDatasetSource,
    ImageLoadError,
    TensorSource,
    TorchDatasetSource,
    VisionSAERunnerConfig,
    VisionSAETrainingRunner,
    hook_geometry,
    image_source,
    validate_source,
)
from tests.training.conftest import TINY_SPEC, write_images


def expected_pixels(model, paths):
    return torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths])


def test_folder_source_flat_and_class_subfolders(model, tmp_path):
    flat = write_images(tmp_path / "flat", 3)
    nested = write_images(tmp_path / "nested", 4, classes=2)
    for root, paths in ((tmp_path / "flat", flat), (tmp_path / "nested", nested)):
        source = image_source(str(root)).with_transform(model.preprocess)
        assert isinstance(source, FolderSource) and len(source) == len(paths)
        order = sorted(paths)
        torch.testing.assert_close(
            torch.stack([source[i] for i in range(len(source))]), expected_pixels(model, order)
        )
        assert source.image_ids() == [p.relative_to(root).as_posix() for p in order]
    assert image_source(str(tmp_path / "nested"), max_images=3).image_ids() == [
        "class_0/img_000.png",
        "class_0/img_002.png",
        "class_1/img_001.png",
    ]


def test_hf_dataset_sources(model, tmp_path):
    paths = write_images(tmp_path / "imgs", 3)
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in paths], "label": [0, 1, 0]}).cast_column(
        "image", datasets.Image()
    )
    expected = expected_pixels(model, paths)
    from_object = image_source(ds).with_transform(model.preprocess)
    assert isinstance(from_object, HFDatasetSource) and from_object.image_column == "image"
    torch.testing.assert_close(torch.stack([from_object[i] for i in range(3)]), expected)
    ds.save_to_disk(str(tmp_path / "saved"))
    from_disk = image_source(str(tmp_path / "saved")).with_transform(model.preprocess)
    torch.testing.assert_close(from_disk[2], expected[2])
    as_paths = datasets.Dataset.from_dict({"file": [str(p) for p in paths]})  # a column of file paths
    torch.testing.assert_close(image_source(as_paths).with_transform(model.preprocess)[1], expected[1])
    with pytest.raises(ValueError, match="image_column"):
        image_source(datasets.Dataset.from_dict({"caption": ["a", "b"]}))


def test_torch_dataset_and_tensor_sources(model, tmp_path):
    paths = write_images(tmp_path / "set", 4, classes=2)
    labelled = load_image_folder(
        tmp_path / "set"
    )  # another module's dataset type: items (image, label, group)
    source = image_source(labelled).with_transform(model.preprocess)
    assert isinstance(source, TorchDatasetSource)
    torch.testing.assert_close(source[0], expected_pixels(model, sorted(paths))[0])
    raw = torch.from_numpy(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    )  # uint8 [N, H, W, 3]
    from_uint8 = image_source(raw).with_transform(model.preprocess)
    torch.testing.assert_close(from_uint8[1], expected_pixels(model, paths)[1])
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(image_source(pixels)[1], pixels[1])  # float tensors are taken as preprocessed


def test_toy_world_source(model):
    toy = pytest.importorskip("sae_clip_plugin.toy")
    if not hasattr(toy, "train_dataset"):
        pytest.skip("sae_clip_plugin.toy has no dataset helper yet")
    source = image_source("toy", max_images=5).with_transform(model.preprocess)
    assert len(source) == 5 and source[0].shape == (3, 32, 32)
    image, _ = toy.train_dataset(5)[3]
    torch.testing.assert_close(source[3], model.preprocess(image))


# -- bad input fails before any work, naming the fix ---------------------------------------------------------


def test_empty_and_unreadable_sources(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty; point dataset"):
        validate_source(image_source(str(tmp_path / "empty")), 32)
    write_images(tmp_path / "bad", 3)
    (tmp_path / "bad" / "img_001.png").write_bytes(b"not a png")
    source = image_source(str(tmp_path / "bad")).with_transform(model.preprocess)
    with pytest.raises(ImageLoadError, match=r"img_001\.png.*remove or replace"):
        validate_source(source, 32)


def test_wrongly_sized_tensors(model):
    with pytest.raises(ImageLoadError, match=r"expects pixel values of shape \(3, 32, 32\)"):
        validate_source(TensorSource(torch.randn(3, 3, 40, 40)), 32)
    with pytest.raises(ValueError, match="N, 3, S, S"):
        TensorSource(torch.randn(3, 32, 32))


def test_hook_and_token_selection_checks(model):
    with pytest.raises(ValueError, match="did you mean"):
        hook_geometry(model, ["blocks.1.hook_resid_pots"], "all")
    with pytest.raises(ValueError, match=r"blocks\.7\.hook_resid_post"):
        hook_geometry(model, ["blocks.7.hook_resid_post"], "all")  # the model has 2 layers
    with pytest.raises(ValueError, match="no token axis"):
        hook_geometry(model, ["hook_pooled"], "all")
    with pytest.raises(ValueError, match="no token axis"):
        hook_geometry(model, ["blocks.0.attn.hook_pattern"], "all")
    with pytest.raises(ValueError, match="token_selection='patches'"):
        hook_geometry(model, ["hook_patch_embed"], "cls")
    with pytest.raises(ValueError, match="token_selection must be one of"):
        hook_geometry(model, ["blocks.0.hook_resid_post"], "first")
    geometry = hook_geometry(
        model, ["hook_patch_embed", "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"], "patches"
    )
    assert [(g.context_size, g.d_in) for g in geometry.values()] == [(16, 64), (16, 64), (16, 256)]
    assert ActivationHarvester(model, ["blocks.0.hook_resid_post"], "cls").context_size == 1


def test_config_rejects_bad_values_before_loading_anything():
    with pytest.raises(ValueError, match="smaller than one batch"):
        VisionSAERunnerConfig(training_tokens=100, train_batch_size_tokens=4096)
    with pytest.raises(ValueError, match="architecture must be one of"):
        VisionSAERunnerConfig(architecture="relu")
    with pytest.raises(ValueError, match="leave no room"):
        VisionSAERunnerConfig(training_tokens=4096 * 100)  # 200 warm-up steps > 100 steps
    with pytest.raises(ValueError, match="does not support normalize_activations='layer_norm'"):
        VisionSAERunnerConfig(architecture="batchtopk", normalize_activations="layer_norm")
    assert VisionSAERunnerConfig(architecture="topk").normalize_activations == "expected_average_only_in"
    assert VisionSAERunnerConfig().normalize_activations == "layer_norm"
    with pytest.raises(ValueError, match="unknown config field"):
        VisionSAERunnerConfig.from_dict({"hook": "blocks.0.hook_resid_post"})
    with pytest.raises(ValueError, match=r"sae \(standard\) option\(s\) \['k'\] do not exist"):
        VisionSAERunnerConfig(sae={"k": 8})  # before any work, not at runner setup


def test_runner_setup_fails_early(model, pixels, tmp_path):
    base = dict(
        model_name=TINY_SPEC,
        dataset_path="unused",
        training_tokens=2048,
        train_batch_size_tokens=256,
        lr_warm_up_steps=1,
        expansion_factor=2,
        device="cpu",
        output_path=str(tmp_path / "out"),
        checkpoint_path=None,
        num_workers=0,
    )
    bad = [
        (dict(hook_name="blocks.5.hook_resid_post"), pixels, ValueError, "unknown hook"),
        (dict(hook_name="hook_patch_embed", token_selection="cls"), pixels, ValueError, "does not fit"),
        (dict(hook_name="blocks.0.hook_resid_post"), torch.randn(0, 3, 32, 32), ValueError, "is empty"),
        (
            dict(hook_name="blocks.0.hook_resid_post", architecture="topk", sae={"k": 1000}),
            pixels,
            ValueError,
            "exceeds d_sae",
        ),
    ]
    for overrides, source, error, message in bad:
        runner = VisionSAETrainingRunner(
            VisionSAERunnerConfig(**{**base, **overrides}), override_model=model, override_source=source
        )
        with pytest.raises(error, match=message):
            runner.setup()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cfg.json").write_text("{}")
    runner = VisionSAETrainingRunner(
        VisionSAERunnerConfig(**base, hook_name="blocks.0.hook_resid_post"),
        override_model=model,
        override_source=pixels,
    )
    with pytest.raises(FileExistsError, match="overwrite_output"):
        runner.setup()


def test_hub_name_offline_names_the_workaround(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="save_to_disk"):
        image_source("hf:sae-clip-plugin/no-such-dataset")
    with pytest.raises(FileNotFoundError, match=r"neither a registered image set \(toy\)"):
        image_source("/no/such/folder")


def test_with_transform_copies_and_set_transform_mutates_as_in_datasets(tmp_path):
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "0.png")
    for source in (image_source(str(tmp_path / "imgs")), load_image_folder(tmp_path / "imgs")):
        transformed = source.with_transform(str)
        assert transformed is not source and source.transform is None and transformed.transform is str
        if hasattr(source, "set_transform"):
            source.set_transform(str)
            assert source.transform is str
