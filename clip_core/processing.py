"""CLIPProcessor: a CLIP tokenizer and a CLIPImageProcessor behind one call, like transformers' CLIPProcessor."""

from __future__ import annotations

import os
import warnings
from typing import Any

from .files import HubOptions, resolve_folder
from .image_processing import PREPROCESS_KWARGS, CLIPImageProcessor
from .tensors import BatchFeature


def _load_tokenizer(folder: str, use_fast: bool):
    """The fast tokenizer by default (as transformers' CLIPProcessor does), the pure-Python one otherwise.

    Imported here, not at module import: the tokenizers are separate modules with their own dependencies.
    """
    if use_fast:
        try:
            from .tokenization_fast import CLIPTokenizerFast
        except ImportError:  # no `tokenizers` package: the slow tokenizer gives the same ids
            pass
        else:
            return CLIPTokenizerFast.from_pretrained(folder)
    from .tokenization import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder)


class CLIPProcessor:
    """Tokenizer + image processor: ``processor(text=..., images=..., return_tensors="pt", padding=True)``.

    Returns a BatchFeature with ``input_ids`` and ``attention_mask`` (from the text) and ``pixel_values``
    (from the images). Keyword arguments that CLIPImageProcessor.preprocess takes go to the image processor,
    all others (padding, truncation, max_length, ...) to the tokenizer; ``text_kwargs={...}`` and
    ``images_kwargs={...}`` address one of them explicitly. ``return_tensors`` goes to both.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor: CLIPImageProcessor | None = None, tokenizer=None, **kwargs) -> None:
        if "feature_extractor" in kwargs:
            warnings.warn(
                "the feature_extractor argument is deprecated; use image_processor",
                FutureWarning,
                stacklevel=2,
            )
            feature_extractor = kwargs.pop("feature_extractor")
            image_processor = image_processor if image_processor is not None else feature_extractor
        if kwargs:
            raise TypeError(f"CLIPProcessor got unexpected arguments {sorted(kwargs)}")
        if image_processor is None:
            raise ValueError("CLIPProcessor needs an image_processor")
        if tokenizer is None:
            raise ValueError("CLIPProcessor needs a tokenizer")
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @property
    def feature_extractor(self) -> CLIPImageProcessor:
        warnings.warn("feature_extractor is deprecated; use image_processor", FutureWarning, stacklevel=2)
        return self.image_processor

    @property
    def model_input_names(self) -> list[str]:
        """The inputs of each part in ``attributes`` order, as transformers lists them (pixels first)."""
        names: list[str] = []
        for part in self.attributes:
            names += [n for n in getattr(self, part).model_input_names if n not in names]
        return names

    def __call__(self, images=None, text=None, return_tensors=None, **kwargs) -> BatchFeature:
        # transformers 4.57 takes images first; text and images are usually passed by name.
        if text is None and images is None:
            raise ValueError("CLIPProcessor needs text, images, or both")
        text_kwargs = dict(kwargs.pop("text_kwargs", None) or {})
        images_kwargs = dict(kwargs.pop("images_kwargs", None) or {})
        for key, value in kwargs.items():
            (images_kwargs if key in PREPROCESS_KWARGS else text_kwargs)[key] = value

        output = BatchFeature()
        if text is not None:
            output.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            output.update(self.image_processor(images, return_tensors=return_tensors, **images_kwargs))
        return output

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """Write preprocessor_config.json and the tokenizer's files into one folder (transformers reads it)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, not a folder")
        os.makedirs(save_directory, exist_ok=True)
        written = list(self.image_processor.save_pretrained(save_directory))
        saved = self.tokenizer.save_pretrained(save_directory, **kwargs)
        written.extend(saved or [])
        return written

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, use_fast: bool = True, **kwargs: Any
    ) -> CLIPProcessor:
        """Read a folder (or cached Hub id) holding preprocessor_config.json and tokenizer files.

        ``kwargs`` override image-processor settings (e.g. ``crop_size=336``)."""
        folder = resolve_folder(pretrained_model_name_or_path, hub=HubOptions.pop_from(kwargs))
        image_processor = CLIPImageProcessor.from_pretrained(folder, **kwargs)
        return cls(image_processor=image_processor, tokenizer=_load_tokenizer(folder, use_fast))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_processor={self.image_processor!r}, tokenizer={self.tokenizer!r})"
        )


__all__ = ["CLIPProcessor"]
