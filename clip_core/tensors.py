"""numpy arrays -> the tensors ``return_tensors`` asks for, and the dict-like batches that carry them.

Every ``return_tensors`` in clip_core (the image processor, both tokenizers, the processor) goes through
``to_framework`` here: ``None`` / ``"np"`` / ``"pt"`` / ``"tf"`` / ``"jax"``, or transformers'
``TensorType`` (a str enum whose value is one of these). The framework is imported only when its
tensor is asked for, so clip_core imports with numpy and the standard library.

The outputs are dicts that also read as attributes (``out.pixel_values``), like transformers':
``BatchFeature`` (image processor, processor) and ``BatchEncoding`` (tokenizers) share ``BatchDict``
and differ only in what they convert (float arrays as they are; token ids as int64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TENSOR_TYPES = ("np", "pt", "tf", "jax")


def tensor_type_name(return_tensors) -> str | None:
    """'np' / 'pt' / 'tf' / 'jax' from a string or transformers' TensorType enum (whose value is the string)."""
    if return_tensors is None:
        return None
    name = getattr(return_tensors, "value", return_tensors)
    if name not in TENSOR_TYPES:
        raise ValueError(
            f"return_tensors must be one of 'np', 'pt', 'tf', 'jax' or None, got {return_tensors!r}"
        )
    return name


def to_framework(array: np.ndarray, return_tensors) -> Any:
    """A numpy array as the framework's tensor (same dtype); the framework is imported only when asked for."""
    name = tensor_type_name(return_tensors)
    if name in (None, "np"):
        return array
    if name == "pt":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    if name == "tf":
        import tensorflow as tf

        return tf.constant(array)
    import jax.numpy as jnp

    return jnp.asarray(array)


def as_tensor(ids, return_tensors):
    """Token ids (lists or an array) as an int64 tensor of the requested framework; unchanged for None."""
    if return_tensors is None:
        return ids
    return to_framework(np.asarray(ids, dtype=np.int64), return_tensors)


class BatchDict(dict):
    """A dict (``out["input_ids"]``) that also reads as attributes (``out.input_ids``) and pickles as a dict.

    Subclasses say how a value becomes a tensor (``_to_tensor``); ``convert_to_tensors`` applies it to every
    value, and ``to`` moves torch tensors.
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r}; it has {list(self)}"
            ) from None

    def __getstate__(self) -> dict:
        return dict(self)

    def __setstate__(self, state: dict) -> None:
        self.update(state)

    @property
    def data(self) -> dict:
        return dict(self)

    @staticmethod
    def _to_tensor(value, return_tensors):
        raise NotImplementedError

    def convert_to_tensors(self, return_tensors):
        """Every value as the ``return_tensors`` framework's tensor, in place (None: left as is)."""
        if return_tensors is None:
            return self
        for key, value in self.items():
            self[key] = self._to_tensor(value, return_tensors)
        return self

    def to(self, *args, **kwargs):
        """torch only: move every torch tensor (``.to(device)`` / ``.to(dtype)``), as transformers does."""
        for key, value in self.items():
            if hasattr(value, "to") and type(value).__module__.startswith("torch"):
                self[key] = value.to(*args, **kwargs)
        return self


class BatchFeature(BatchDict):
    """The image processor's and the processor's output (``pixel_values``, and the tokenizer's fields).

    ``convert_to_tensors`` converts numpy arrays, keeping their dtype, and leaves other values alone."""

    @staticmethod
    def _to_tensor(value, return_tensors):
        return to_framework(value, return_tensors) if isinstance(value, np.ndarray) else value


class BatchEncoding(BatchDict):
    """The tokenizers' output (``input_ids``, ``attention_mask``, ...).

    ``convert_to_tensors`` turns every value (lists of ids or arrays) into an int64 tensor."""

    _to_tensor = staticmethod(as_tensor)


__all__ = [
    "BatchDict",
    "BatchEncoding",
    "BatchFeature",
    "TENSOR_TYPES",
    "as_tensor",
    "tensor_type_name",
    "to_framework",
]
