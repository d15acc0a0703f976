"""Reading images: any input (a PIL image of any mode, a path, a numpy / torch / tensorflow / jax array,
or lists of these) as one image with a known layout, before anything is resized.

- ``make_image_list``: one image, a list (nested one level) or a 4-D batch -> a flat list of single images;
- ``read_image``: one image -> a PIL image PIL can resize as it is (RGB, L), or an (H, W, C) array; paths are
  opened here, framework tensors become numpy here (recognised by their module, so no framework is imported);
- the channel layout of an array: by the caller's ``input_data_format``, else by which end of the shape
  looks like channels; a shape where both ends could be channels is an error, not a guess.

transformers 4.57.6 reads a PIL image 1 or 3 pixels high as a channels-first array; we never ask a PIL
image for its layout.

Limits, checked before anything is decoded or allocated: an image (file, PIL image or array) may hold
at most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's decompression-bomb limit, 89,478,485 by default;
None lifts it), and the resize may not make more than ``MAX_RESIZED_PIXELS`` (a 1 x 10,000 image
resized to a 224 short edge would be 224 x 2,240,000). A file PIL cannot read is a ValueError naming
it. NaN / infinity, and values outside [0, 255] where PIL's RGB conversion would clip them (16-bit
and 32-bit integer images, float images), are refused alike for PIL images and arrays.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"
MAX_RESIZED_PIXELS = 2**25  # 33.5 Mpx: 224 x 149,796, or 5792 x 5792
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL's convert("RGB") clips these to [0, 255]


def check_pixels(height: int, width: int, what: str) -> None:
    """ValueError if an image of ``height`` x ``width`` exceeds PIL's decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and height * width > limit:
        raise ValueError(
            f"{what} has {width} x {height} = {height * width:,} pixels, over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS; a decompression bomb?): refused before decoding it. Raise the "
            "limit only for images you trust"
        )


def decode_image(source: str | os.PathLike | bytes, where: str | None = None) -> Image.Image:
    """An image file (a path or the file's bytes) fully decoded, so that a truncated or corrupt file
    fails here, not later. Over PIL.Image.MAX_IMAGE_PIXELS it is a ValueError naming ``where`` (default:
    the path) before anything is decoded: PIL alone decodes such images under twice its limit (with
    a warning) and raises its own error type above it. Other failures are PIL's own exceptions."""
    what = where or (os.fspath(source) if not isinstance(source, bytes) else "the image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below applies
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{what}: {e}") from None
    with image:
        check_pixels(image.height, image.width, what)
        image.load()
    return image


def check_resize(height: int, width: int, resized: tuple[int, int]) -> None:
    """ValueError if resizing ``height`` x ``width`` to ``resized`` makes more than MAX_RESIZED_PIXELS."""
    if resized[0] * resized[1] > MAX_RESIZED_PIXELS:
        ratio = max(height, width) / max(1, min(height, width))
        raise ValueError(
            f"resizing a {width} x {height} image (aspect ratio 1:{ratio:.0f}) to {resized[1]} x {resized[0]} "
            f"would make {resized[0] * resized[1]:,} pixels, over the limit of {MAX_RESIZED_PIXELS:,} "
            "(clip_core.image_inputs.MAX_RESIZED_PIXELS): crop such an image first"
        )


def channel_format(value, name: str) -> str | None:
    """A data format argument checked: 'channels_first', 'channels_last', 'none' (2-D) or None."""
    value = getattr(value, "value", value)  # transformers' ChannelDimension enum
    if value is None:
        return None
    if value in (CHANNELS_FIRST, CHANNELS_LAST, "none"):
        return value
    raise ValueError(f"{name} must be 'channels_first', 'channels_last' or None, got {value!r}")


def _framework_to_numpy(image) -> np.ndarray | None:
    """numpy for torch / tensorflow / jax tensors, recognised by their module so no framework is imported."""
    module = type(image).__module__
    if module.startswith("torch"):
        tensor = image.detach().cpu()
        if tensor.dtype.is_floating_point and tensor.element_size() < 4:  # bfloat16 has no numpy twin
            tensor = tensor.float()
        return tensor.numpy()
    if module.startswith(("tensorflow", "tf_keras", "keras")) and hasattr(image, "numpy"):
        return np.asarray(image.numpy())
    if module.startswith(("jax", "jaxlib")):
        return np.asarray(image)
    return None


def to_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    array = _framework_to_numpy(image)
    if array is None:
        raise ValueError(
            "each image must be a PIL.Image.Image, a numpy array, a torch / tensorflow / jax tensor, or a path "
            f"to an image file; got {type(image).__module__}.{type(image).__qualname__}"
        )
    return array


def _open_path(path) -> Image.Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"image path {path!r} is not an existing file (URLs are not fetched: download first)"
        )
    try:
        image = decode_image(path)
        if image.mode == "P":
            return image.convert("RGBA" if "transparency" in image.info else "RGB")
        return image
    except ValueError as e:
        if path in str(e):
            raise
        raise ValueError(f"cannot read the image {path}: {e}") from None
    except Exception as e:  # PIL raises many types on a damaged file (OSError, SyntaxError, EOFError, ...)
        raise ValueError(f"cannot read the image {path}: {type(e).__name__}: {e}") from None


def _infer_channels_last(shape: tuple[int, ...], input_data_format: str | None) -> bool:
    """Whether a 3-D array is (height, width, channels): by the caller's word, else by which end looks like channels.

    transformers assumes channels-first whenever both ends could be channels (shape (3, W, 3) or (1, 1, 3));
    such a shape is ambiguous, so we ask the caller instead of guessing.
    """
    if input_data_format == CHANNELS_LAST:
        return True
    if input_data_format == CHANNELS_FIRST:
        return False
    for channel_counts in ((1, 3), (4, 2)):  # grey / RGB first, then RGBA / grey+alpha
        first, last = shape[0] in channel_counts, shape[2] in channel_counts
        if first and last:
            raise ValueError(
                f"cannot tell whether the channels of an image of shape {shape} are first or last; "
                "pass input_data_format='channels_first' or 'channels_last'"
            )
        if first or last:
            return last
    raise ValueError(
        f"cannot find the channel axis of an image of shape {shape}: neither the first nor the last axis "
        "has 1, 2, 3 or 4 entries; pass input_data_format='channels_first' or 'channels_last'"
    )


def as_hwc(array: np.ndarray, input_data_format: str | None) -> tuple[np.ndarray, bool]:
    """An array image as (height, width, channels), checked for emptiness, dtype and non-finite values;
    and whether it came channels-last (a 2-D image counts as channels-last)."""
    channels_last = True
    if array.ndim == 2:
        array = array[:, :, None]  # (height, width): one grey channel
    elif array.ndim == 3:
        if input_data_format == "none":
            raise ValueError(f"input_data_format='none' means a 2-D image, got shape {array.shape}")
        channels_last = _infer_channels_last(array.shape, input_data_format)
        if not channels_last:
            array = array.transpose(1, 2, 0)
    else:
        raise ValueError(f"an image must have 2 or 3 dimensions (a batch 4), got shape {array.shape}")
    check_pixels(array.shape[0], array.shape[1], f"an image of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"image has zero size: shape {array.shape} (as height, width, channels)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255  # like PIL's mode "1" -> "L"
    elif array.dtype.kind == "f":
        if array.dtype.itemsize < 4:
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
    elif array.dtype.kind not in "ui":
        raise ValueError(f"image dtype must be bool, integer or float, got {array.dtype}")
    return array, channels_last


def _convert_array_to_rgb(array: np.ndarray) -> np.ndarray:
    """What PIL's convert('RGB') does for grey, grey+alpha, RGB and RGBA arrays (transformers leaves arrays alone)."""
    channels = array.shape[2]
    if channels == 3:
        return array
    if channels in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    if channels == 4:
        return array[:, :, :3]
    raise ValueError(f"cannot convert an image with {channels} channels to RGB")


def _pil_for_processing(image: Image.Image, do_convert_rgb: bool) -> Image.Image | np.ndarray:
    """A PIL image PIL can resize as is (RGB, L), else its pixels as an (H, W, C) array."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image has zero size: {image.width}x{image.height} (width x height)")
    check_pixels(image.height, image.width, f"a {image.mode} image")
    if do_convert_rgb:
        if image.mode in _WIDE_MODES:
            _check_wide(image)
        return image if image.mode == "RGB" else image.convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):  # palette indices are no intensities
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    # RGBA and LA are resized channel by channel (image_transforms): PIL would premultiply alpha and
    # change the colours.
    return as_hwc(np.asarray(image), CHANNELS_LAST)[0]


def _check_wide(image: Image.Image) -> None:
    """What arrays get: NaN / inf refused, and values PIL's convert("RGB") would clip to [0, 255]."""
    if image.mode == "F" and not np.isfinite(np.asarray(image)).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = image.getextrema()
    if low < 0 or high > 255:
        raise ValueError(
            f"a mode {image.mode} image with values in [{low}, {high}]: values must lie in [0, 255] (PIL's RGB "
            "conversion would clip them); scale it to 8 bits first, e.g. np.asarray(image) // 257 for 16 bits"
        )


def read_image(
    image, do_convert_rgb: bool, input_data_format: str | None
) -> tuple[Image.Image | np.ndarray, bool]:
    """One image as a PIL image (RGB or L) or an (H, W, C) array; and whether it came channels-last.

    With ``do_convert_rgb`` the result has 3 channels (PIL's convert('RGB'), its equivalent for arrays)."""
    if isinstance(image, (str, os.PathLike)):
        image = _open_path(image)
    if isinstance(image, Image.Image):
        return _pil_for_processing(image, do_convert_rgb), True
    source, channels_last = as_hwc(to_array(image), input_data_format)
    if do_convert_rgb:
        source = _convert_array_to_rgb(source)
    return source, channels_last


def _is_array_like(value) -> bool:
    return isinstance(value, np.ndarray) or _framework_module(value)


def _framework_module(value) -> bool:
    return type(value).__module__.split(".")[0] in ("torch", "tensorflow", "jax", "jaxlib") and hasattr(
        value, "ndim"
    )


def make_image_list(images) -> list:
    """A flat list of single images from one image, a list (nested one level), or a 4-D batch array."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list: give at least one image")
        flat = []
        for item in images:
            if isinstance(item, (list, tuple)):
                flat.extend(make_image_list(item) if item else [])
            elif _is_array_like(item) and item.ndim == 4:
                flat.extend(list(item))
            else:
                flat.append(item)
        if not flat:
            raise ValueError("images holds only empty lists: give at least one image")
        return flat
    if _is_array_like(images):
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError(f"images is an empty batch: shape {tuple(images.shape)}")
            return list(images)
        if images.ndim in (2, 3):
            return [images]
        raise ValueError(
            f"an image array must have 2 or 3 dimensions, or 4 for a batch; got {images.ndim} (shape "
            f"{tuple(images.shape)})"
        )
    return [images]


__all__ = [
    "CHANNELS_FIRST",
    "CHANNELS_LAST",
    "MAX_RESIZED_PIXELS",
    "channel_format",
    "check_pixels",
    "check_resize",
    "make_image_list",
    "read_image",
]
