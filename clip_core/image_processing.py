"""CLIP image preprocessing: the same numbers as transformers' (slow, PIL-based) CLIPImageProcessor, faster.

Pipeline per image, in transformers' order: convert to RGB -> resize (PIL, shortest edge by default)
-> center crop (zero padding where the image is smaller than the crop) -> rescale -> normalise -> layout.

Where the speed comes from, without changing a single output value:
- a PIL image is resized as it is; transformers turns it into numpy and back into PIL first;
- after a resize every pixel is a uint8, so rescale + normalise is a per-channel lookup table of 256
  float32 values, built with transformers' exact arithmetic (float64 rescale, float32 normalise):
  the result is bit-identical, and one gather per channel replaces four passes over float arrays;
- the crop is a view of the resized uint8 image, taken before anything is converted to float;
- the lookup writes straight into the batch array, already channels-first;
- images are processed on a few threads (PIL releases the GIL while it resizes).

Where transformers 4.57.6 is wrong, we are not (the tests show both):
- a PIL image 1 or 3 pixels high is read by transformers as a channels-first array; we never ask a
  PIL image for its layout;
- a float image already in [0, 1] is rescaled by 1/255 a second time by transformers unless
  ``do_rescale=False``; we leave it unscaled (and warn), giving what transformers gives with
  ``do_rescale=False``.

numpy and Pillow only; torch / tensorflow / jax are imported only to convert inputs that already are
their tensors, or when ``return_tensors`` asks for them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .files import atomic_write_text, resolve_file
from .image_inputs import CHANNELS_FIRST, channel_format, make_image_list, read_image
from .tensors import BatchFeature, tensor_type_name, to_framework

IMAGE_PROCESSOR_NAME = "preprocessor_config.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC; transformers stores the plain int in its json

_VALID_SIZE_KEYS = (
    {"height", "width"},
    {"shortest_edge"},
    {"shortest_edge", "longest_edge"},
    {"longest_edge"},
    {"max_height", "max_width"},
)
# Settings that preprocess() takes and the json stores (in transformers' names).
_SETTINGS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)
PREPROCESS_KWARGS = frozenset(_SETTINGS) | {"data_format", "input_data_format", "num_threads"}


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def get_size_dict(size, *, default_to_square: bool, param_name: str) -> dict[str, int]:
    """A size in transformers' dict form; old files store an int (or a [height, width] list)."""
    if isinstance(size, Mapping):
        size = dict(size)
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (
            {"height": int(size), "width": int(size)} if default_to_square else {"shortest_edge": int(size)}
        )
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        size = {"height": int(size[0]), "width": int(size[1])}
    else:
        raise ValueError(f"{param_name} must be an int, a (height, width) pair or a dict, got {size!r}")
    if set(size) not in _VALID_SIZE_KEYS:
        raise ValueError(f"{param_name} must have one of the key sets {_VALID_SIZE_KEYS}, got {sorted(size)}")
    for key, value in size.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{param_name}[{key!r}] must be a positive int, got {value!r}")
    return {key: int(value) for key, value in size.items()}


def _resized_hw(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
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


def _per_channel(values, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float, np.floating, np.integer)):
        return (float(values),)
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float or a list of floats, got {values!r}") from None
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


@dataclass(frozen=True)
class _Plan:
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


# --------------------------------------------------------------------------------------------------
# Resize, crop, rescale + normalise
# --------------------------------------------------------------------------------------------------


def _uint8_for_resize(array: np.ndarray) -> tuple[np.ndarray, bool]:
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


def _resize_uint8(array: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
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


def _center_crop(array: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
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


def _check_channels(values: tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values but the image has {channels} channels")
    return values


def _rescale_normalize(values: np.ndarray, plan: _Plan, pre_scale: float | None, rescale: bool) -> np.ndarray:
    """transformers' arithmetic: rescales multiply in float64 and round to float32; normalise in the image's dtype."""
    if pre_scale is not None:
        values = (values.astype(np.float64) * pre_scale).astype(np.float32)
    if rescale:
        values = (values.astype(np.float64) * plan.rescale_factor).astype(np.float32)
    if plan.do_normalize:
        if values.dtype.kind != "f":
            values = values.astype(np.float32)
        channels = values.shape[-1]
        mean = np.array(_check_channels(plan.image_mean, channels, "image_mean"), dtype=values.dtype)
        std = np.array(_check_channels(plan.image_std, channels, "image_std"), dtype=values.dtype)
        values = (values - mean) / std
    return values.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _lookup_table(plan: _Plan, channels: int, pre_scale: float | None, rescale: bool) -> np.ndarray:
    """[channels, 256] float32: the output value of every uint8 pixel value, by transformers' own arithmetic."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, channels))
    return np.ascontiguousarray(_rescale_normalize(values, plan, pre_scale, rescale).T)


def _write_output(pixels: np.ndarray, plan: _Plan, pre_scale, rescale: bool, channels_first: bool, out):
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


def _warn_already_scaled() -> None:
    # Python's default warning filter shows this once per call site, not once per image.
    warnings.warn(
        "float images with values in [0, 1] are taken as already rescaled: rescale_factor is not applied to "
        "them (transformers would apply it a second time unless do_rescale=False)",
        UserWarning,
        stacklevel=5,
    )


def _process_one(image, plan: _Plan, out: np.ndarray | None) -> np.ndarray:
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
        if isinstance(source, Image.Image):
            hw = _resized_hw(source.height, source.width, plan.size)
            resized = (
                source if hw == (source.height, source.width) else source.resize(hw[::-1], plan.resample)
            )
            pixels = np.asarray(resized)
            pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        else:
            pixels, scaled_up = _uint8_for_resize(source)
            pixels = _resize_uint8(pixels, _resized_hw(*pixels.shape[:2], plan.size), plan.resample)
            pre_scale = 1 / 255 if scaled_up else None
    else:
        pixels = np.asarray(source) if isinstance(source, Image.Image) else source
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if plan.do_center_crop:
        pixels = _center_crop(pixels, plan.crop_hw)

    channels_first = (
        plan.data_format == CHANNELS_FIRST if plan.data_format is not None else not source_was_channels_last
    )
    return _write_output(pixels, plan, pre_scale, rescale, channels_first, out)


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


# --------------------------------------------------------------------------------------------------
# The public class
# --------------------------------------------------------------------------------------------------


class CLIPImageProcessor:
    r"""CLIP's image preprocessing, with transformers' parameters, defaults and ``preprocessor_config.json``.

    Args:
        do_resize: resize so that the short edge is ``size["shortest_edge"]`` (or to exactly
            ``size["height"] x size["width"]``).
        size: ``{"shortest_edge": 224}`` by default; an int means the shortest edge (old files).
        resample: PIL filter (int or PIL.Image.Resampling), bicubic by default.
        do_center_crop / crop_size: crop to ``crop_size`` (``{"height": 224, "width": 224}``; an int means square).
        do_rescale / rescale_factor: multiply by ``rescale_factor`` (1/255).
        do_normalize / image_mean / image_std: ``(x - mean) / std`` per channel (OpenAI's values).
        do_convert_rgb: convert PIL images of any mode, and grey / RGBA arrays, to RGB.

    Input values: uint8 (or integer) images in [0, 255], or float images in [0, 255] or [0, 1].

    The ``do_rescale=False`` pitfall: transformers expects pixel values in [0, 255] and tells users to pass
    ``do_rescale=False`` for float images already in [0, 1] -- forgetting it divides by 255 twice and gives a
    nearly constant image with no error. This class detects float images in [0, 1] and does not rescale them
    (with a warning), so either setting gives the right result for them. Note that with ``do_resize`` a
    float image goes through uint8 for PIL, exactly as in transformers (values * 255, truncated).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int = BICUBIC,
        do_center_crop: bool = True,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs,
    ) -> None:
        self.do_resize = do_resize
        self.size = get_size_dict(
            size if size is not None else {"shortest_edge": 224}, default_to_square=False, param_name="size"
        )
        self.resample = resample
        self.do_center_crop = do_center_crop
        self.crop_size = get_size_dict(
            crop_size if crop_size is not None else {"height": 224, "width": 224},
            default_to_square=True,
            param_name="crop_size",
        )
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean) if isinstance(image_mean, (list, tuple)) else image_mean
        self.image_std = list(image_std) if isinstance(image_std, (list, tuple)) else image_std
        if self.image_mean is None:
            self.image_mean = list(OPENAI_CLIP_MEAN)
        if self.image_std is None:
            self.image_std = list(OPENAI_CLIP_STD)
        self.do_convert_rgb = do_convert_rgb
        if kwargs.pop("use_square_size", False):  # old Kosmos-2 files: a square resize
            self.size = {"height": self.size["shortest_edge"], "width": self.size["shortest_edge"]}
        # Keys we do not use (feature_extractor_type, processor_class, ...) are kept and written back, like
        # transformers does, so that a file read and saved again keeps them.
        kwargs.pop("image_processor_type", None)
        self.extra_config = kwargs

    # -- preprocessing ------------------------------------------------------------------------------

    def _plan(self, overrides: dict) -> _Plan:
        settings = {name: getattr(self, name) for name in _SETTINGS}
        settings.update({k: v for k, v in overrides.items() if v is not None and k in _SETTINGS})
        size = get_size_dict(settings["size"], default_to_square=False, param_name="size")
        crop = get_size_dict(settings["crop_size"], default_to_square=True, param_name="crop_size")
        if settings["do_center_crop"] and set(crop) != {"height", "width"}:
            raise ValueError(f"crop_size must have 'height' and 'width', got {sorted(crop)}")
        if settings["do_resize"]:
            _resized_hw(1, 1, size)  # checks the keys
        rescale_factor = settings["rescale_factor"]
        if settings["do_rescale"] and not isinstance(rescale_factor, (int, float, np.number)):
            raise ValueError(f"rescale_factor must be a number, got {rescale_factor!r}")
        resample = int(getattr(settings["resample"], "value", settings["resample"]))
        if resample not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"resample must be a PIL resampling filter (0-5), got {settings['resample']!r}")
        data_format = channel_format(overrides.get("data_format"), "data_format")
        if data_format == "none":
            raise ValueError("data_format must be 'channels_first', 'channels_last' or None")
        return _Plan(
            do_resize=bool(settings["do_resize"]),
            size=_FrozenDict(size),
            resample=resample,
            do_center_crop=bool(settings["do_center_crop"]),
            crop_hw=(crop.get("height", 0), crop.get("width", 0)),
            do_rescale=bool(settings["do_rescale"]),
            rescale_factor=float(rescale_factor),
            do_normalize=bool(settings["do_normalize"]),
            image_mean=_per_channel(settings["image_mean"], "image_mean"),
            image_std=_per_channel(settings["image_std"], "image_std"),
            do_convert_rgb=bool(settings["do_convert_rgb"]),
            data_format=data_format,
            input_data_format=channel_format(overrides.get("input_data_format"), "input_data_format"),
        )

    def preprocess(
        self,
        images,
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        resample: int | None = None,
        do_center_crop: bool | None = None,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors=None,
        data_format: str | None = CHANNELS_FIRST,
        input_data_format: str | None = None,
        num_threads: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one image or a batch into ``BatchFeature(pixel_values=...)``.

        Args:
            images: a PIL image (any mode), a numpy array (H, W), (H, W, C) or (C, H, W), uint8 or float, a
                torch / tensorflow / jax tensor, a path, or a list of these (or a 4-D batch).
            return_tensors: None (a list of float32 arrays), "np", "pt", "tf" or "jax" (one batch tensor).
            data_format: "channels_first" (default) or "channels_last" output; None keeps each input's layout.
            input_data_format: the layout of array inputs, when their shape leaves it open (e.g. (3, 10, 3)).
            num_threads: images processed at once (default: the CPUs we may use, at most 8; 1 = no threads).
            The other arguments override the settings of this processor for this call.

        Output values are float32 (transformers keeps the input dtype when neither rescaling nor normalising).
        """
        if kwargs:
            warnings.warn(f"unused arguments to preprocess: {sorted(kwargs)}", UserWarning, stacklevel=2)
        plan = self._plan(dict(locals()))
        image_list = make_image_list(images)
        tensor_type = tensor_type_name(return_tensors)

        out = None
        if tensor_type is not None and plan.do_center_crop and plan.do_convert_rgb and plan.data_format:
            height, width = plan.crop_hw
            shape = (3, height, width) if plan.data_format == CHANNELS_FIRST else (height, width, 3)
            out = np.empty((len(image_list), *shape), np.float32)

        def run(index: int) -> np.ndarray:
            return _process_one(image_list[index], plan, None if out is None else out[index])

        threads = _default_threads() if num_threads is None else max(1, int(num_threads))
        if threads > 1 and len(image_list) > 1:
            results = list(_thread_pool(threads).map(run, range(len(image_list))))
        else:
            results = [run(i) for i in range(len(image_list))]

        if tensor_type is None:
            return BatchFeature(pixel_values=results)
        if out is None:
            shapes = {r.shape for r in results}
            if len(shapes) > 1:
                raise ValueError(
                    f"the processed images have different shapes {sorted(shapes)} and cannot form one tensor; "
                    "center crop them (do_center_crop=True) or pass return_tensors=None for a list"
                )
            out = np.stack(results)
        return BatchFeature(pixel_values=to_framework(out, tensor_type))

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    # -- files --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """transformers' preprocessor_config.json fields (ours first, then any unknown ones we were given)."""
        config = copy.deepcopy(self.extra_config)
        for name in _SETTINGS:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        config["resample"] = int(getattr(self.resample, "value", self.resample))
        config["image_processor_type"] = "CLIPImageProcessor"
        return config

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **kwargs) -> CLIPImageProcessor:
        return cls(**{**dict(config), **kwargs})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """Write ``preprocessor_config.json`` (atomically) into ``save_directory``, as transformers does."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, not a folder")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, IMAGE_PROCESSOR_NAME)
        atomic_write_text(path, self.to_json_string())
        return [path]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs
    ) -> CLIPImageProcessor:
        """Read ``preprocessor_config.json`` from a folder, the file itself, or a cached Hub id.

        Keyword arguments override the file's values (``size={"shortest_edge": 336}``)."""
        path = resolve_file(pretrained_model_name_or_path, IMAGE_PROCESSOR_NAME)
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
        return cls.from_dict(config, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other) -> bool:
        return isinstance(other, CLIPImageProcessor) and self.to_dict() == other.to_dict()


class _FrozenDict(dict):
    """A hashable dict, so that a _Plan can key the lookup-table cache."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


class CLIPFeatureExtractor(CLIPImageProcessor):
    """Deprecated alias of CLIPImageProcessor (as in transformers); it warns and then behaves identically."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn(
            "CLIPFeatureExtractor is deprecated and will be removed; use CLIPImageProcessor instead.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


__all__ = ["BatchFeature", "CLIPFeatureExtractor", "CLIPImageProcessor", "make_image_list", "to_framework"]
