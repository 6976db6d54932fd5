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


def _png_16(path, values: np.ndarray, colour: int, significant: int | None) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour or an sBIT chunk)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = values.shape[:2]
    rows = values.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    channels = 3 if colour == 2 else 1
    sbit = chunk(b"sBIT", bytes([significant] * channels)) if significant else b""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + header + sbit + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_12_bit_data_in_a_16_bit_png_is_read_by_its_sbit_chunk(tmp_path):
    values = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)  # 0 .. 4080: 12-bit sensor data
    _png_16(tmp_path / "s12.png", values, colour=0, significant=12)
    rgb = np.asarray(open_rgb(tmp_path / "s12.png"))
    np.testing.assert_array_equal(rgb[..., 0], np.round(values / 4095 * 255).astype(np.uint8))  # not 0..16
    assert rgb.max() == 254
    # a declared 16-bit image stays 16-bit however dark it is
    _png_16(tmp_path / "s16.png", values, colour=0, significant=16)
    np.testing.assert_array_equal(
        np.asarray(open_rgb(tmp_path / "s16.png"))[..., 0], np.round(values / 65535 * 255).astype(np.uint8)
    )


def test_12_bit_data_without_sbit_is_read_as_12_bit_with_a_warning(tmp_path, monkeypatch):
    from sae_clip_plugin.data import _io

    monkeypatch.setattr(_io, "_warned_12_bit", set())
    values = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)
    _png_16(tmp_path / "n.png", values, colour=0, significant=None)
    with pytest.warns(UserWarning, match="no sBIT chunk is read as 12-bit data"):
        rgb = np.asarray(open_rgb(tmp_path / "n.png"))
    np.testing.assert_array_equal(rgb[..., 1], np.round(values / 4095 * 255).astype(np.uint8))


def test_a_16_bit_colour_png_of_12_bit_data_is_refused_with_the_fix(tmp_path):
    values = np.random.default_rng(0).integers(0, 4096, (8, 8, 3)).astype(np.uint16)
    _png_16(tmp_path / "c.png", values, colour=2, significant=12)
    assert Image.open(tmp_path / "c.png").mode == "RGB"  # Pillow keeps the top byte only: 0..15
    with pytest.raises(
        ValueError, match=r"c\.png is a 16-bit colour PNG holding 12-bit data.*rescale it to 8-bit"
    ):
        open_rgb(tmp_path / "c.png")
    full = (values.astype(np.uint32) * 16).astype(np.uint16)  # real 16-bit colour: read as Pillow reads it
    _png_16(tmp_path / "full.png", full, colour=2, significant=None)
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "full.png")), (full >> 8).astype(np.uint8))
