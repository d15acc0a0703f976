"""The image transforms and the loop that runs them: one image at a time, on a few threads.

The pure transforms, transformers' (slow, PIL-based) CLIPImageProcessor's numbers to the bit:
- resize with PIL (bicubic by default): the short edge to ``size["shortest_edge"]``, the long edge
  truncated; a PIL image is resized as it is (transformers turns it into numpy and back into PIL first),
  arrays go through uint8 as in transformers;
- center crop with transformers' offset ``(size - crop) // 2``, zero padding where the image is smaller;
  the crop is a view of the resized uint8 image, taken before anything is converted to float;
- rescale + normalise with transformers' arithmetic (float64 rescale, float32 normalise). After a resize
  every pixel is a uint8, so this is a per-channel lookup table of 256 float32 values built with that very
  arithmetic: bit-identical, and one gather per channel (written straight into the batch array, already
  channels-first) replaces four passes over float arrays.

A float image already in [0, 1] is rescaled by 1/255 a second time by transformers 4.57.6 unless
``do_rescale=False``; we leave it unscaled (and warn), giving what transformers gives with
``do_rescale=False``.

``Plan`` holds the settings of one call, resolved once for the batch; ``process_images`` runs every
image through ``image_inputs.read_image`` and the transforms, on a shared thread pool (PIL releases the
GIL while it resizes).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .image_inputs import CHANNELS_FIRST, check_resize, read_image

# --------------------------------------------------------------------------------------------------
# The settings of one call
# --------------------------------------------------------------------------------------------------


def resized_hw(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """transformers' output size: the short edge becomes size["shortest_edge"], the long edge is truncated.

    Like transformers, "longest_edge" beside "shortest_edge" is ignored by CLIP's resize.
    """
    if "shortest_edge" in size:
        target = size["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(target * long / short)
        return (new_long, target) if width <= height else (target, new_long)
    if "height" in size and "width" in size:
        return size["height"], size["width"]
    raise ValueError(
        f"size must contain 'shortest_edge' or 'height' and 'width' to resize, got {sorted(size)}"
    )


@dataclass(frozen=True)
class Plan:
    """Every setting of one preprocess() call, resolved and checked once for the whole batch."""

    do_resize: bool
    size: dict
    resample: int
    do_center_crop: bool
    crop_hw: tuple[int, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    do_convert_rgb: bool
    data_format: str | None
    input_data_format: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _FrozenDict(self.size))  # hashable: a plan keys the lookup tables


class _FrozenDict(dict):
    """A hashable dict, so that a Plan can key the lookup-table cache."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


# --------------------------------------------------------------------------------------------------
# Resize, crop, rescale + normalise
# --------------------------------------------------------------------------------------------------


def uint8_for_resize(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The uint8 pixels PIL resizes, and whether they were scaled up from [0, 1] (to scale back after).

    transformers' rules: integer-valued images in [0, 255] are cast; float images in [0, 1] are multiplied
    by 255 (float64, then float32) and truncated. transformers refuses float images with fractional values
    above 1; we round those to the nearest integer instead (if they lie in [0, 255]).
    """
    if array.dtype == np.uint8:
        return array, False
    low, high = array.min(), array.max()
    if array.dtype.kind in "ui" or np.allclose(array, array.astype(int)):
        if low < 0 or high > 255:
            raise ValueError(f"image values must lie in [0, 255] to be resized, got [{low}, {high}]")
        return array.astype(np.uint8), False
    if low >= 0 and high <= 1:
        return (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8), True
    if low >= 0 and high <= 255:
        return np.rint(array).astype(np.uint8), False
    raise ValueError(f"float image values must lie in [0, 1] or [0, 255] to be resized, got [{low}, {high}]")


def resize_uint8(array: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    """PIL resize of an (H, W, C) uint8 array: grey and RGB in one call, other channel counts one by one."""
    height, width = hw
    channels = array.shape[2]
    if channels in (1, 3):
        image = Image.fromarray(np.ascontiguousarray(array[:, :, 0] if channels == 1 else array))
        return np.asarray(image.resize((width, height), resample=resample)).reshape(height, width, channels)
    bands = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[:, :, c])).resize((width, height), resample=resample)
        )
        for c in range(channels)
    ]
    return np.stack(bands, axis=2)


def center_crop_hwc(array: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """transformers' center crop of (H, W, C): offset (size - crop) // 2, zero padding where the image is smaller."""
    height, width = array.shape[:2]
    crop_h, crop_w = crop_hw
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[top : top + crop_h, left : left + crop_w]
    # transformers pads to at least the crop size (ceil of half the shortfall before), then crops.
    pad_h, pad_w = max(crop_h, height), max(crop_w, width)
    top_pad, left_pad = -(-(pad_h - height) // 2), -(-(pad_w - width) // 2)
    padded = np.zeros((pad_h, pad_w, array.shape[2]), dtype=array.dtype)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = array
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : top + crop_h, max(0, left) : left + crop_w]


def per_channel_values(values: tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values but the image has {channels} channels")
    return values


def _rescale_normalize(values: np.ndarray, plan: Plan, pre_scale: float | None, rescale: bool) -> np.ndarray:
    """transformers' arithmetic: rescales multiply in float64 and round to float32; normalise in the image's dtype."""
    if pre_scale is not None:
        values = (values.astype(np.float64) * pre_scale).astype(np.float32)
    if rescale:
        values = (values.astype(np.float64) * plan.rescale_factor).astype(np.float32)
    if plan.do_normalize:
        if values.dtype.kind != "f":
            values = values.astype(np.float32)
        channels = values.shape[-1]
        mean = np.array(per_channel_values(plan.image_mean, channels, "image_mean"), dtype=values.dtype)
        std = np.array(per_channel_values(plan.image_std, channels, "image_std"), dtype=values.dtype)
        values = (values - mean) / std
    return values.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _lookup_table(plan: Plan, channels: int, pre_scale: float | None, rescale: bool) -> np.ndarray:
    """[channels, 256] float32: the output value of every uint8 pixel value, by transformers' own arithmetic."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, channels))
    return np.ascontiguousarray(_rescale_normalize(values, plan, pre_scale, rescale).T)


def _write_output(pixels: np.ndarray, plan: Plan, pre_scale, rescale: bool, channels_first: bool, out):
    """Rescale + normalise into ``out`` (allocated here if None), in the requested layout."""
    height, width, channels = pixels.shape
    if out is None:
        out = np.empty((channels, height, width) if channels_first else (height, width, channels), np.float32)
    if pixels.dtype == np.uint8:
        table = _lookup_table(plan, channels, pre_scale, rescale)
        for c in range(channels):
            np.take(table[c], pixels[:, :, c], out=out[c] if channels_first else out[:, :, c], mode="clip")
    else:
        values = _rescale_normalize(pixels, plan, pre_scale, rescale)
        out[...] = values.transpose(2, 0, 1) if channels_first else values
    return out


# --------------------------------------------------------------------------------------------------
# One image, then a batch on threads
# --------------------------------------------------------------------------------------------------


def _warn_already_scaled() -> None:
    # Python's default warning filter shows this once per call site, not once per image. The site is
    # CLIPImageProcessor.preprocess (the frame above process_images) when the images run serially.
    warnings.warn(
        "float images with values in [0, 1] are taken as already rescaled: rescale_factor is not applied to "
        "them (transformers would apply it a second time unless do_rescale=False)",
        UserWarning,
        stacklevel=6,
    )


def _process_one(image, plan: Plan, out: np.ndarray | None) -> np.ndarray:
    """One image through the whole pipeline; writes into ``out`` when given (a slot of the batch array)."""
    source, source_was_channels_last = read_image(image, plan.do_convert_rgb, plan.input_data_format)

    already_scaled = False
    if isinstance(source, np.ndarray) and source.dtype.kind == "f":
        already_scaled = bool(source.min() >= 0 and source.max() <= 1)
    rescale = plan.do_rescale and not already_scaled
    if plan.do_rescale and already_scaled:
        _warn_already_scaled()

    pre_scale = None
    if plan.do_resize:
        height, width = (source.height, source.width) if isinstance(source, Image.Image) else source.shape[:2]
        hw = resized_hw(height, width, plan.size)
        check_resize(height, width, hw)  # before anything that size is allocated
        if isinstance(source, Image.Image):
            resized = source if hw == (height, width) else source.resize(hw[::-1], plan.resample)
            pixels = np.asarray(resized)
            pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        else:
            pixels, scaled_up = uint8_for_resize(source)
            pixels = resize_uint8(pixels, hw, plan.resample)
            pre_scale = 1 / 255 if scaled_up else None
    else:
        pixels = np.asarray(source) if isinstance(source, Image.Image) else source
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if plan.do_center_crop:
        pixels = center_crop_hwc(pixels, plan.crop_hw)

    channels_first = (
        plan.data_format == CHANNELS_FIRST if plan.data_format is not None else not source_was_channels_last
    )
    return _write_output(pixels, plan, pre_scale, rescale, channels_first, out)


def process_image(image, plan: Plan, out: np.ndarray | None = None) -> np.ndarray:
    """One image through the pipeline of ``plan``, into ``out`` when given (e.g. a row of a batch array).

    The per-image path for callers that run their own threads (a streaming loader decoding ahead)."""
    return _process_one(image, plan, out)


_executor_lock = threading.Lock()
_executor: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One shared pool, rebuilt after a fork (a DataLoader worker must not inherit its parent's dead threads)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid() or _executor[1] != workers:
            _executor = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="clip-image"))
        return _executor[2]


def _default_threads() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))


def process_images(images: list, plan: Plan, batched: bool, num_threads: int | None) -> np.ndarray | list:
    """Every image through the pipeline: a list of float32 arrays, or with ``batched`` one stacked array.

    ``num_threads``: images processed at once (None: the CPUs we may use, at most 8; 1 = no threads)."""
    out = None
    if batched and plan.do_center_crop and plan.do_convert_rgb and plan.data_format:
        height, width = plan.crop_hw
        shape = (3, height, width) if plan.data_format == CHANNELS_FIRST else (height, width, 3)
        out = np.empty((len(images), *shape), np.float32)

    def run(index: int) -> np.ndarray:
        return _process_one(images[index], plan, None if out is None else out[index])

    threads = _default_threads() if num_threads is None else max(1, int(num_threads))
    if threads > 1 and len(images) > 1:
        results = list(_thread_pool(threads).map(run, range(len(images))))
    else:
        results = [run(i) for i in range(len(images))]

    if not batched:
        return results
    if out is None:
        shapes = {r.shape for r in results}
        if len(shapes) > 1:
            raise ValueError(
                f"the processed images have different shapes {sorted(shapes)} and cannot form one tensor; "
                "center crop them (do_center_crop=True) or pass return_tensors=None for a list"
            )
        out = np.stack(results)
    return out


__all__ = ["Plan", "process_image", "process_images", "resized_hw"]
