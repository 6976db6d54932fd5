"""High-bit-depth images are rescaled to 8 bits (not clipped to white) or refused with a message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sae_clip_plugin.data._io import open_rgb


def test_16_bit_png_is_rescaled_not_saturated(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(open_rgb(tmp_path / "g16.png"))
    expected = np.round(values / 65535 * 255).astype(np.uint8)  # hand-computed 16 -> 8 bit scaling
    assert rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert (rgb == 255).mean() < 0.01  # Pillow's own convert("RGB") makes ~99.6% of these pixels 255


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(values, "F").save(tmp_path / "f.tiff")
    rgb = np.asarray(open_rgb(tmp_path / "f.tiff"))
    np.testing.assert_array_equal(rgb[..., 1], np.round(values.astype(np.float64) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN or inf pixel values"),
        (np.full((8, 8), 300.0, dtype=np.float32), r"values in \[300, 300\]; only 0..1"),
    ],
)
def test_float_images_outside_the_unit_range_are_refused(tmp_path, values, message):
    Image.fromarray(values, "F").save(tmp_path / "bad.tiff")
    with pytest.raises(ValueError, match=message) as info:
        open_rgb(tmp_path / "bad.tiff")
    assert "bad.tiff" in str(info.value)


def test_8_bit_images_are_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "l.png")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "a.png")), rgb)
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "l.png"))[..., 2], rgb[..., 0])
