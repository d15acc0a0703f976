"""clip_core.image_inputs: any image input -> a flat list, and one image -> PIL (RGB / L) or (H, W, C)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clip_core.image_inputs import channel_format, make_image_list, read_image


def test_make_image_list_flattens_lists_and_batches():
    image = np.zeros((4, 5, 3), np.uint8)
    batch = np.zeros((2, 4, 5, 3), np.uint8)
    assert len(make_image_list(image)) == 1
    assert len(make_image_list(batch)) == 2
    assert len(make_image_list([image, [image, batch], []])) == 4
    pil = Image.new("RGB", (5, 4))
    assert make_image_list(pil) == [pil]
    for empty in ([], [[]], np.zeros((0, 4, 5, 3))):
        with pytest.raises(ValueError, match="empty"):
            make_image_list(empty)
    with pytest.raises(ValueError, match="dimensions"):
        make_image_list(np.zeros((1, 1, 2, 4, 5)))


def test_read_image_layouts():
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    source, channels_last = read_image(hwc, True, None)
    assert channels_last and source is hwc
    source, channels_last = read_image(hwc.transpose(2, 0, 1), True, None)
    assert not channels_last and np.array_equal(source, hwc)
    grey, channels_last = read_image(hwc[:, :, 0], True, None)
    assert channels_last and grey.shape == (4, 5, 3)
    with pytest.raises(ValueError, match="input_data_format"):
        read_image(np.zeros((3, 7, 3), np.uint8), True, None)
    source, channels_last = read_image(np.zeros((3, 7, 3), np.uint8), True, "channels_first")
    assert source.shape == (7, 3, 3) and not channels_last


def test_read_image_pil_and_paths(tmp_path):
    source, channels_last = read_image(Image.new("RGB", (5, 4)), False, None)
    assert channels_last and isinstance(source, Image.Image) and source.mode == "RGB"
    palette, _ = read_image(Image.new("P", (5, 4)), False, None)  # indices are no intensities: RGB pixels
    assert isinstance(palette, np.ndarray) and palette.shape == (4, 5, 3)
    rgba, _ = read_image(Image.new("RGBA", (5, 4)), False, None)
    assert isinstance(rgba, np.ndarray) and rgba.shape == (4, 5, 4)
    path = tmp_path / "a.png"
    Image.new("L", (5, 4), 7).save(path)
    for given in (path, str(path)):
        source, _ = read_image(given, True, None)
        assert source.mode == "RGB" and source.size == (5, 4)
    with pytest.raises(ValueError, match="not an existing file"):
        read_image(tmp_path / "missing.png", True, None)
    with pytest.raises(ValueError, match="PIL.Image.Image"):
        read_image(object(), True, None)


def test_channel_format():
    assert channel_format(None, "x") is None
    assert channel_format("channels_last", "x") == "channels_last"
    with pytest.raises(ValueError, match="data_format"):
        channel_format("NCHW", "data_format")
