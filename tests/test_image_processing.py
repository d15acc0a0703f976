"""CLIPImageProcessor against transformers 4.57.6's (slow, PIL-based) CLIPImageProcessor: max abs diff <= 1e-5."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from clip_core.image_processing import CLIPFeatureExtractor, CLIPImageProcessor
from tests.tiny_configs import assert_close


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    return transformers


def hf_processor(hf, **kwargs):
    return hf.CLIPImageProcessor(**kwargs)


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    return [
        Image.fromarray(data.chelsea()),
        Image.fromarray(data.astronaut()),
        Image.fromarray(data.coffee()),
    ]


def natural_image(height, width, seed=0, channels=3):
    """Smooth gradients plus noise: values spread over 0..255 like a photo, deterministic."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (
        128
        + 90 * np.sin(xx / max(width, 1) * 6 + seed)[..., None] * np.cos(yy / max(height, 1) * 4)[..., None]
    )
    noise = rng.normal(0, 25, (height, width, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# -- real photos and synthetic images, defaults ----------------------------------------------------


def test_photos_defaults_equal_transformers(hf, photos):
    ours = CLIPImageProcessor()(photos, return_tensors="np")["pixel_values"]
    theirs = hf_processor(hf)(photos, return_tensors="np")["pixel_values"]
    assert ours.shape == (3, 3, 224, 224) and ours.dtype == np.float32
    assert_close(ours, theirs)


MODES = ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1", "I", "F", "YCbCr"]


def image_in_mode(mode, height=37, width=53, seed=1):
    rgb = Image.fromarray(natural_image(height, width, seed))
    if mode == "I;16":
        return Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 200)  # values up to 51000
    if mode == "P":
        return rgb.quantize(64)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_equals_transformers(hf, mode):
    image = image_in_mode(mode)
    assert image.mode == mode
    ours = CLIPImageProcessor()(image, return_tensors="np").pixel_values
    theirs = hf_processor(hf)(image, return_tensors="np").pixel_values
    assert_close(ours, theirs)


@pytest.mark.parametrize(
    "height,width",
    [(224, 224), (480, 640), (640, 480), (225, 223), (2, 2), (5, 400), (400, 5), (1000, 30), (9, 7)],
)
def test_many_sizes_equal_transformers(hf, height, width):
    image = Image.fromarray(natural_image(height, width, seed=height * 7 + width))
    assert_close(
        CLIPImageProcessor()(image, return_tensors="np").pixel_values, hf_processor(hf)(image).pixel_values
    )


SETTINGS = [
    dict(size={"shortest_edge": 64}, crop_size={"height": 48, "width": 40}),
    dict(
        size={"shortest_edge": 32}, crop_size={"height": 64, "width": 64}
    ),  # crop larger than image: zero pad
    dict(size={"height": 50, "width": 70}, do_center_crop=False),
    dict(do_resize=False, crop_size={"height": 30, "width": 30}),
    dict(do_resize=False, do_center_crop=False),
    dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.2, 0.3, 0.4], size={"shortest_edge": 40}, crop_size=40),
    dict(image_mean=0.5, image_std=0.25, size=40, crop_size=32),  # old-style ints and scalar mean / std
    dict(resample=2, size={"shortest_edge": 33}, crop_size=31),
    dict(resample=0, size={"shortest_edge": 33}, crop_size=31),
    dict(do_normalize=False, size={"shortest_edge": 40}, crop_size=32),
    dict(do_rescale=False, size={"shortest_edge": 40}, crop_size=32),
    dict(rescale_factor=1 / 127.5, image_mean=1.0, image_std=1.0, size={"shortest_edge": 40}, crop_size=32),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_non_default_settings_equal_transformers(hf, settings, data_format):
    images = [Image.fromarray(natural_image(45, 61, seed=3)), Image.fromarray(natural_image(58, 47, seed=4))]
    ours = CLIPImageProcessor(**settings)(images, data_format=data_format)["pixel_values"]
    theirs = hf_processor(hf, **settings)(images, data_format=data_format)["pixel_values"]
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert_close(a, b)


def test_call_time_overrides_equal_transformers(hf, photos):
    kwargs = dict(
        size={"shortest_edge": 96}, crop_size={"height": 80, "width": 72}, image_mean=[0.1, 0.2, 0.3]
    )
    ours = CLIPImageProcessor()(photos, return_tensors="np", **kwargs).pixel_values
    theirs = hf_processor(hf)(photos, return_tensors="np", **kwargs).pixel_values
    assert ours.shape == (3, 3, 80, 72)
    assert_close(ours, theirs)


# -- arrays and framework tensors ------------------------------------------------------------------


def test_numpy_layouts_and_dtypes_equal_transformers(hf):
    hwc = natural_image(50, 70, seed=5)
    cases = [
        hwc,
        hwc.transpose(2, 0, 1),  # channels first
        hwc.astype(np.float32),  # integer-valued floats in [0, 255]
        hwc.astype(np.int64),
        natural_image(50, 70, seed=6, channels=1),
    ]
    settings = dict(size={"shortest_edge": 40}, crop_size=36)
    for array in cases:
        theirs_settings = dict(settings)
        if array.shape[-1] == 1:  # transformers does not convert grey arrays to RGB: compare on the RGB twin
            theirs_input = np.repeat(array, 3, axis=-1)
        else:
            theirs_input = array
        ours = CLIPImageProcessor(**settings)(array, return_tensors="np").pixel_values
        theirs = hf_processor(hf, **theirs_settings)(theirs_input, return_tensors="np").pixel_values
        assert_close(ours, theirs)


def test_float_in_unit_range(hf):
    """transformers' do_rescale pitfall: [0, 1] floats are divided by 255 again unless do_rescale=False."""
    image = natural_image(40, 52, seed=7).astype(np.float32) / 255 + np.float32(0.0005)
    image = np.clip(image, 0, 1)
    settings = dict(size={"shortest_edge": 32}, crop_size=30)
    correct = hf_processor(hf, do_rescale=False, **settings)(image, return_tensors="np").pixel_values
    with pytest.warns(UserWarning, match="already rescaled"):
        ours_default = CLIPImageProcessor(**settings)(image, return_tensors="np").pixel_values
    ours_no_rescale = CLIPImageProcessor(do_rescale=False, **settings)(
        image, return_tensors="np"
    ).pixel_values
    assert_close(ours_default, correct)
    assert_close(ours_no_rescale, correct)
    # transformers' own result with its default do_rescale=True is wrong: nearly constant, far from correct.
    wrong = hf_processor(hf, **settings)(image, return_tensors="np").pixel_values
    assert np.abs(wrong - correct).max() > 1.0
    # Also without resizing (no uint8 round trip at all).
    correct = hf_processor(hf, do_rescale=False, do_resize=False, **settings)(image, return_tensors="np")
    with pytest.warns(UserWarning):
        ours = CLIPImageProcessor(do_resize=False, **settings)(image, return_tensors="np")
    assert_close(ours.pixel_values, correct.pixel_values)


def test_fractional_float_0_255_is_rounded(hf):
    """transformers refuses fractional floats above 1 when resizing; we round them to the nearest integer."""
    image = np.minimum(natural_image(30, 40, seed=8).astype(np.float64) + 0.3, 255)
    image[0, 0, 0] = 254.6
    with pytest.raises(ValueError):
        hf_processor(hf)(image)
    ours = CLIPImageProcessor()(image, return_tensors="np").pixel_values
    assert_close(ours, hf_processor(hf)(np.rint(image).astype(np.uint8), return_tensors="np").pixel_values)


def test_framework_tensors_equal_numpy():
    torch = pytest.importorskip("torch")
    array = natural_image(33, 47, seed=9)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    expected = processor(array, return_tensors="np").pixel_values
    chw = torch.from_numpy(array.transpose(2, 0, 1).copy())
    assert_close(processor(chw, return_tensors="np").pixel_values, expected)
    assert_close(processor(chw.float(), return_tensors="np").pixel_values, expected)
    assert_close(processor(chw[None].repeat(2, 1, 1, 1), return_tensors="np").pixel_values[1], expected[0])
    jnp = pytest.importorskip("jax.numpy")
    assert_close(processor(jnp.asarray(array), return_tensors="np").pixel_values, expected)
    tf = pytest.importorskip("tensorflow")
    assert_close(processor(tf.constant(array), return_tensors="np").pixel_values, expected)


@pytest.mark.parametrize("return_tensors", ["np", "pt", "tf", "jax"])
def test_return_tensors(return_tensors):
    pytest.importorskip({"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}[return_tensors])
    images = [natural_image(20, 30, seed=s) for s in range(2)]
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16)
    expected = processor(images, return_tensors="np").pixel_values
    out = processor(images, return_tensors=return_tensors)
    assert tuple(out.pixel_values.shape) == (2, 3, 16, 16)
    assert_close(np.asarray(out.pixel_values), expected)
    assert (
        type(out.pixel_values).__module__.split(".")[0]
        in {
            "np": ("numpy",),
            "pt": ("torch",),
            "tf": ("tensorflow",),
            "jax": ("jaxlib", "jax"),
        }[return_tensors]
    )


def test_return_tensors_accepts_transformers_tensor_type(hf):
    out = CLIPImageProcessor()(natural_image(10, 10), return_tensors=hf.TensorType.NUMPY)
    assert isinstance(out.pixel_values, np.ndarray)


def test_threads_do_not_change_results(photos):
    processor = CLIPImageProcessor()
    serial = processor(photos * 2, return_tensors="np", num_threads=1).pixel_values
    threaded = processor(photos * 2, return_tensors="np", num_threads=4).pixel_values
    np.testing.assert_array_equal(serial, threaded)


def test_uncropped_list_and_ragged_tensor_error():
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, do_center_crop=False)
    images = [natural_image(20, 30), natural_image(30, 20)]
    out = processor(images)
    assert [a.shape for a in out.pixel_values] == [(3, 16, 24), (3, 24, 16)]
    with pytest.raises(ValueError, match="different shapes"):
        processor(images, return_tensors="np")


# -- where transformers gets the layout wrong ------------------------------------------------------


@pytest.mark.parametrize("height,width", [(3, 50), (1, 40), (1, 1), (3, 3)])
def test_thin_pil_images_are_never_channels_first(hf, height, width):
    """transformers reads a PIL image 1 or 3 pixels high as a channels-first array (wrong, or an error).

    The correct result is transformers' own pipeline told the true layout (input_data_format="channels_last")."""
    image = Image.fromarray(natural_image(height, width, seed=10))
    settings = dict(size={"shortest_edge": 24}, crop_size=20)
    ours = CLIPImageProcessor(**settings)(image, return_tensors="np").pixel_values
    correct = hf_processor(hf, **settings)(
        np.asarray(image), input_data_format="channels_last", return_tensors="np"
    ).pixel_values
    assert_close(ours, correct)
    try:
        theirs = hf_processor(hf, **settings)(image, return_tensors="np").pixel_values
    except ValueError:
        return  # transformers cannot process it at all
    assert theirs.shape != ours.shape or np.abs(theirs - ours).max() > 0.01


def test_ambiguous_array_needs_input_data_format(hf):
    array = natural_image(3, 20, seed=11)  # (3, 20, 3): channels could be first or last
    with pytest.raises(ValueError, match="input_data_format"):
        CLIPImageProcessor()(array)
    ours = CLIPImageProcessor()(array, input_data_format="channels_last", return_tensors="np").pixel_values
    theirs = hf_processor(hf)(array, input_data_format="channels_last", return_tensors="np").pixel_values
    assert_close(ours, theirs)


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,match",
    [
        ([], "empty"),
        (np.zeros((1, 2, 3, 4, 5), np.uint8), "dimensions"),
        (np.zeros((5, 7, 9), np.uint8), "channel axis"),
        (object(), "PIL.Image.Image"),
        ({"pixels": 1}, "PIL.Image.Image"),
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (Image.new("RGB", (0, 4)), "zero size"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.array([[[np.inf, 0, 0]]], np.float32).repeat(4, 0).repeat(4, 1), "NaN or infinite"),
        (np.zeros((4, 4, 3), np.complex64), "dtype"),
        ("no/such/file.png", "not an existing file"),
        (np.full((6, 6, 3), 300, np.int32), r"\[0, 255\]"),
    ],
)
def test_bad_input_raises_clear_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        CLIPImageProcessor()(bad, return_tensors="np")


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="image_mean"):
        CLIPImageProcessor(image_mean=[0.5, 0.5])(natural_image(10, 10))
    with pytest.raises(ValueError, match="return_tensors"):
        CLIPImageProcessor()(natural_image(10, 10), return_tensors="torch")
    with pytest.raises(ValueError, match="size"):
        CLIPImageProcessor(size={"short": 3})


# -- files -----------------------------------------------------------------------------------------


def test_save_then_transformers_reads(hf, tmp_path, photos):
    ours = CLIPImageProcessor(
        size={"shortest_edge": 96}, crop_size={"height": 80, "width": 88}, image_mean=[0.4] * 3
    )
    ours.save_pretrained(tmp_path)
    theirs = hf.CLIPImageProcessor.from_pretrained(tmp_path)
    assert theirs.size == {"shortest_edge": 96} and theirs.crop_size == {"height": 80, "width": 88}
    assert_close(
        ours(photos, return_tensors="np").pixel_values, theirs(photos, return_tensors="np").pixel_values
    )
    assert (
        hf.AutoImageProcessor.from_pretrained(tmp_path, use_fast=False).__class__.__name__
        == "CLIPImageProcessor"
    )


def test_read_transformers_file(hf, tmp_path, photos):
    theirs = hf.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=56, image_std=[0.3, 0.3, 0.3])
    theirs.save_pretrained(tmp_path)
    ours = CLIPImageProcessor.from_pretrained(tmp_path)
    assert ours.to_dict() == {
        k: v for k, v in json.loads((tmp_path / "preprocessor_config.json").read_text()).items()
    }
    assert_close(
        ours(photos, return_tensors="np").pixel_values, theirs(photos, return_tensors="np").pixel_values
    )
    assert CLIPImageProcessor.from_pretrained(tmp_path, crop_size=32).crop_size == {"height": 32, "width": 32}


def test_read_old_feature_extractor_file(hf, tmp_path, photos):
    """Files of openai/clip-vit-base-patch32's era: ints for size and crop_size, feature_extractor_type."""
    old = {
        "crop_size": 200,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 210,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(old))
    ours = CLIPImageProcessor.from_pretrained(tmp_path)
    theirs = hf.CLIPImageProcessor.from_pretrained(tmp_path)
    assert ours.size == {"shortest_edge": 210} and ours.crop_size == {"height": 200, "width": 200}
    assert_close(
        ours(photos, return_tensors="np").pixel_values, theirs(photos, return_tensors="np").pixel_values
    )
    resaved = tmp_path / "resaved"
    ours.save_pretrained(resaved)
    written = json.loads((resaved / "preprocessor_config.json").read_text())
    assert (
        written["feature_extractor_type"] == "CLIPFeatureExtractor"
    )  # unknown keys survive, as in transformers
    assert hf.CLIPImageProcessor.from_pretrained(resaved).crop_size == {"height": 200, "width": 200}


def test_feature_extractor_is_deprecated_alias(photos):
    with pytest.warns(FutureWarning, match="CLIPImageProcessor"):
        extractor = CLIPFeatureExtractor(crop_size=100)
    assert isinstance(extractor, CLIPImageProcessor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = CLIPImageProcessor(crop_size=100)(photos, return_tensors="np").pixel_values
    np.testing.assert_array_equal(extractor(photos, return_tensors="np").pixel_values, expected)
