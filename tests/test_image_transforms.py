"""clip_core.image_transforms: the transforms one by one, and process_images (transformers parity is in
test_image_processing.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from clip_core import image_transforms
from clip_core.image_transforms import Plan, process_images, resized_hw

PLAN = Plan(
    do_resize=True,
    size={"shortest_edge": 8},
    resample=3,
    do_center_crop=True,
    crop_hw=(8, 8),
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=(0.48145466, 0.4578275, 0.40821073),
    image_std=(0.26862954, 0.26130258, 0.27577711),
    do_convert_rgb=True,
    data_format="channels_first",
    input_data_format=None,
)


def test_resized_hw():
    assert resized_hw(480, 640, {"shortest_edge": 224}) == (224, 298)  # 224 * 640 / 480 = 298.67, truncated
    assert resized_hw(640, 480, {"shortest_edge": 224}) == (298, 224)
    assert resized_hw(5, 7, {"height": 3, "width": 2}) == (3, 2)
    with pytest.raises(ValueError, match="shortest_edge"):
        resized_hw(5, 7, {"longest_edge": 3})


def test_center_crop_offsets_and_padding():
    image = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6, 1)
    crop = image_transforms.center_crop_hwc(image, (2, 3))
    assert np.array_equal(crop, image[1:3, 1:4])  # offset (size - crop) // 2
    padded = image_transforms.center_crop_hwc(image, (7, 6))  # one zero row above, one below
    assert padded.shape == (7, 6, 1)
    assert not padded[0].any() and not padded[-1].any() and np.array_equal(padded[1:6], image)


def test_lookup_table_equals_the_float_arithmetic():
    pixels = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for rescale in (True, False):
        via_table = image_transforms._write_output(pixels, PLAN, None, rescale, True, None)
        direct = image_transforms._rescale_normalize(pixels, PLAN, None, rescale).transpose(2, 0, 1)
        assert via_table.dtype == np.float32 and np.array_equal(via_table, direct)


def test_plan_is_hashable_with_a_dict_size():
    assert hash(PLAN) == hash(dataclasses.replace(PLAN, size={"shortest_edge": 8}))


@pytest.mark.parametrize("num_threads", [1, 3])
def test_process_images(num_threads):
    images = [Image.new("RGB", (12 + i, 10), (i, 2 * i, 3 * i)) for i in range(4)]
    batch = process_images(images, PLAN, True, num_threads)
    assert batch.shape == (4, 3, 8, 8) and batch.dtype == np.float32
    listed = process_images(images, PLAN, False, num_threads)
    assert len(listed) == 4 and all(np.array_equal(a, b) for a, b in zip(listed, batch))
    no_crop = dataclasses.replace(PLAN, do_center_crop=False)
    with pytest.raises(ValueError, match="different shapes"):
        process_images([images[0], images[0].resize((30, 10))], no_crop, True, num_threads)
