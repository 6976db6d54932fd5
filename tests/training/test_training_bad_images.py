"""A bad image among good ones is named in one line, also when DataLoader workers decode it; EXIF rotation applies."""

from __future__ import annotations

import pytest
from PIL import Image

from sae_clip_plugin.data._io import open_rgb
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.sources import ImageLoadError, image_source
from tests.training.conftest import write_images


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_mid_dataset_is_one_line_naming_it(model, tmp_path, workers):
    folder = tmp_path / "images"
    write_images(folder, 12)
    (folder / "img_005.png").write_bytes(b"not a png at all")
    source = image_source(str(folder))
    source.set_transform(model.preprocess)
    harvester = ActivationHarvester(
        model, ["blocks.0.hook_resid_post"], "all", batch_size=4, num_workers=workers
    )
    with pytest.raises(ImageLoadError) as info:
        list(harvester.iter_batches(source))
    message = str(info.value)
    assert "img_005.png" in message
    assert "\n" not in message and "Traceback" not in message


def test_exif_orientation_is_applied(tmp_path):
    """A portrait photo stored landscape with EXIF orientation 6 (rotate 90) comes out portrait, as viewers show it."""
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    assert Image.open(path).size == (40, 20)
    assert open_rgb(path).size == (20, 40)
