"""CLIPImageProcessor: CLIP's image preprocessing with the same numbers as transformers' (slow, PIL-based)
CLIPImageProcessor, faster; its settings and its ``preprocessor_config.json`` (and the deprecated
CLIPFeatureExtractor).

Pipeline per image, in transformers' order: convert to RGB -> resize (PIL, shortest edge by default)
-> center crop (zero padding where the image is smaller than the crop) -> rescale -> normalise -> layout.
The pieces live by what they are about:
- image_inputs.py: any input (PIL of any mode, path, numpy / torch / tf / jax, lists) -> single images
  with a known channel layout;
- image_transforms.py: resize, crop, rescale + normalise (where the speed comes from), one image at a
  time on a thread pool;
- tensors.py: the output batch (BatchFeature) and ``return_tensors``.
This module resolves the settings of a call into one plan and hands it over. The names that lived here
before the split (BatchFeature, to_framework, make_image_list) still import from here.

numpy and Pillow only; torch / tensorflow / jax are imported only to convert inputs that already are
their tensors, or when ``return_tensors`` asks for them.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .files import HubOptions, atomic_write_text, read_json, resolve_file
from .image_inputs import CHANNELS_FIRST, as_hwc, channel_format, make_image_list, to_array
from .image_transforms import (
    Plan,
    center_crop_hwc,
    per_channel_values,
    process_image,
    process_images,
    resize_uint8,
    resized_hw,
    uint8_for_resize,
)
from .tensors import BatchFeature, tensor_type_name, to_framework

IMAGE_PROCESSOR_NAME = "preprocessor_config.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC; transformers stores the plain int in its json
MAX_SIZE = 8192  # sanity limit on size / crop_size values (CLIP models use 224 to 560)

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
        if value > MAX_SIZE:
            raise ValueError(f"{param_name}[{key!r}] is {value:,}, above the sanity limit {MAX_SIZE:,}")
    return {key: int(value) for key, value in size.items()}


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

    def _plan(self, overrides: dict) -> Plan:
        settings = {name: getattr(self, name) for name in _SETTINGS}
        settings.update({k: v for k, v in overrides.items() if v is not None and k in _SETTINGS})
        size = get_size_dict(settings["size"], default_to_square=False, param_name="size")
        crop = get_size_dict(settings["crop_size"], default_to_square=True, param_name="crop_size")
        if settings["do_center_crop"] and set(crop) != {"height", "width"}:
            raise ValueError(f"crop_size must have 'height' and 'width', got {sorted(crop)}")
        if settings["do_resize"]:
            resized_hw(1, 1, size)  # checks the keys
        rescale_factor = settings["rescale_factor"]
        if settings["do_rescale"] and not isinstance(rescale_factor, (int, float, np.number)):
            raise ValueError(f"rescale_factor must be a number, got {rescale_factor!r}")
        resample = int(getattr(settings["resample"], "value", settings["resample"]))
        if resample not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"resample must be a PIL resampling filter (0-5), got {settings['resample']!r}")
        data_format = channel_format(overrides.get("data_format"), "data_format")
        if data_format == "none":
            raise ValueError("data_format must be 'channels_first', 'channels_last' or None")
        return Plan(
            do_resize=bool(settings["do_resize"]),
            size=size,
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

        pixel_values = process_images(image_list, plan, tensor_type is not None, num_threads)
        if tensor_type is None:
            return BatchFeature(pixel_values=pixel_values)
        return BatchFeature(pixel_values=to_framework(pixel_values, tensor_type))

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    # -- the steps as public methods (transformers' CLIPImageProcessor API, one numpy image each) -----

    def resize(
        self, image, size, resample=BICUBIC, data_format=None, input_data_format=None, **kwargs
    ) -> np.ndarray:
        """PIL resize of one image: the short edge to ``size["shortest_edge"]`` (or to exactly
        ``size["height"] x size["width"]``). uint8 stays uint8; a float image in [0, 1] goes through
        uint8 and comes back as float32 in [0, 1], as transformers does. Layout as the input unless
        ``data_format`` says otherwise."""
        _no_kwargs("resize", kwargs)
        array, channels_last = as_hwc(
            _image_array(image), channel_format(input_data_format, "input_data_format")
        )
        size = get_size_dict(size, default_to_square=False, param_name="size")
        pixels, scaled_up = uint8_for_resize(array)
        resample = int(getattr(resample, "value", resample))
        out = resize_uint8(pixels, resized_hw(*pixels.shape[:2], size), resample)
        if scaled_up:
            out = (out.astype(np.float64) * (1 / 255)).astype(np.float32)
        return _in_layout(out, data_format, channels_last)

    def center_crop(self, image, size, data_format=None, input_data_format=None, **kwargs) -> np.ndarray:
        """transformers' center crop to ``size`` ({"height", "width"}; an int means square), zero padding
        where the image is smaller; the dtype is kept."""
        _no_kwargs("center_crop", kwargs)
        size = get_size_dict(size, default_to_square=True, param_name="size")
        if set(size) != {"height", "width"}:
            raise ValueError(f"The size dictionary must have keys 'height' and 'width'. Got {sorted(size)}")
        array, channels_last = as_hwc(
            _image_array(image), channel_format(input_data_format, "input_data_format")
        )
        out = center_crop_hwc(array, (size["height"], size["width"]))
        return _in_layout(out, data_format, channels_last)

    def rescale(self, image, scale: float, data_format=None, input_data_format=None, **kwargs) -> np.ndarray:
        """``image * scale`` in float64, returned as float32 (transformers' arithmetic); layout kept
        unless ``data_format`` is given."""
        _no_kwargs("rescale", kwargs)
        out = (_image_array(image).astype(np.float64) * scale).astype(np.float32)
        if data_format is None:
            return out
        hwc, channels_last = as_hwc(out, channel_format(input_data_format, "input_data_format"))
        return _in_layout(hwc, data_format, channels_last)

    def normalize(self, image, mean, std, data_format=None, input_data_format=None, **kwargs) -> np.ndarray:
        """``(image - mean) / std`` per channel in the image's float dtype (integers become float32)."""
        _no_kwargs("normalize", kwargs)
        array, channels_last = as_hwc(
            _image_array(image), channel_format(input_data_format, "input_data_format")
        )
        if array.dtype.kind != "f":
            array = array.astype(np.float32)
        channels = array.shape[-1]
        mean = np.array(per_channel_values(_per_channel(mean, "mean"), channels, "mean"), dtype=array.dtype)
        std = np.array(per_channel_values(_per_channel(std, "std"), channels, "std"), dtype=array.dtype)
        return _in_layout((array - mean) / std, data_format, channels_last)

    def preprocess_into(self, image, out: np.ndarray) -> np.ndarray:
        """One image with this processor's settings into ``out``, a channels-first float32 array of the
        crop size (a row of a batch being filled); the same numbers as ``preprocess``. For loaders that
        decode on their own threads."""
        return process_image(image, self._plan({"data_format": CHANNELS_FIRST}), out)

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
        hub = HubOptions.pop_from(kwargs)  # subfolder, revision, cache_dir, local_files_only, ...
        path = resolve_file(pretrained_model_name_or_path, IMAGE_PROCESSOR_NAME, hub=hub)
        config = read_json(path)  # ValueError naming the file if it is not JSON, too large or too deep
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
        try:
            return cls.from_dict(config, **kwargs)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other) -> bool:
        return isinstance(other, CLIPImageProcessor) and self.to_dict() == other.to_dict()


def _image_array(image) -> np.ndarray:
    """One image as a numpy array (PIL images, numpy and framework tensors)."""
    return np.asarray(image) if isinstance(image, Image.Image) else to_array(image)


def _no_kwargs(method: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"CLIPImageProcessor.{method} got unexpected keyword arguments {sorted(kwargs)}")


def _in_layout(hwc: np.ndarray, data_format, came_channels_last: bool) -> np.ndarray:
    """An (H, W, C) result in ``data_format``, or in the input's layout when it is None."""
    data_format = channel_format(data_format, "data_format")
    channels_first = data_format == CHANNELS_FIRST if data_format is not None else not came_channels_last
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)) if channels_first else hwc


class CLIPFeatureExtractor(CLIPImageProcessor):
    """Deprecated alias of CLIPImageProcessor (as in transformers); it warns and then behaves identically."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn(
            "CLIPFeatureExtractor is deprecated and will be removed; use CLIPImageProcessor instead.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


__all__ = [
    "BICUBIC",
    "IMAGE_PROCESSOR_NAME",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PREPROCESS_KWARGS",
    "BatchFeature",
    "CLIPFeatureExtractor",
    "CLIPImageProcessor",
    "get_size_dict",
    "make_image_list",
    "to_framework",
]
