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
    """Token ids (lists or an array) as an integer tensor of the requested framework; unchanged for None.

    int64 for "np" and "pt", int32 for "tf" and "jax": what transformers' tokenizers return (their
    tf.constant / jnp.array of Python ints).
    """
    if return_tensors is None:
        return ids
    name = tensor_type_name(return_tensors)
    return to_framework(np.asarray(ids, dtype=np.int32 if name in ("tf", "jax") else np.int64), name)


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
        """torch only, as transformers: every tensor moves to the device; floating tensors (pixel_values)
        also take a dtype (``.to("cuda", torch.float16)``), token ids keep theirs."""
        import torch

        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                cast = dtype if dtype is not None and value.is_floating_point() else None
                self[key] = value.to(device=device, dtype=cast, **kwargs)
        return self


class BatchFeature(BatchDict):
    """The image processor's and the processor's output (``pixel_values``, and the tokenizer's fields).

    ``convert_to_tensors`` converts numpy arrays, keeping their dtype, and leaves other values alone."""

    @staticmethod
    def _to_tensor(value, return_tensors):
        return to_framework(value, return_tensors) if isinstance(value, np.ndarray) else value


class BatchEncoding(BatchDict):
    """The tokenizers' output (``input_ids``, ``attention_mask``, ...).

    ``convert_to_tensors`` turns every value (lists of ids or arrays) into an integer tensor
    (``as_tensor``). From the fast tokenizer it also answers ``word_ids(i)``, ``tokens(i)`` and
    ``sequence_ids(i)`` (computed when first asked for), as transformers' fast tokenizers do."""

    _to_tensor = staticmethod(as_tensor)

    def set_token_details(self, compute) -> None:
        """``compute()`` -> (offsets, word ids, tokens) per text: what word_ids() and tokens() read."""
        self.__dict__["_compute_details"] = compute

    def _details(self, which: int, batch_index: int, method: str) -> list:
        compute = self.__dict__.get("_compute_details")
        if compute is None:
            raise ValueError(
                f"{method}() is not available when using non-fast tokenizers (e.g. instance of a `XxxFast` class)"
            )
        if "_token_details" not in self.__dict__:
            self.__dict__["_token_details"] = compute()
        return list(self.__dict__["_token_details"][which][batch_index])

    @property
    def is_fast(self) -> bool:
        return "_compute_details" in self.__dict__

    def word_ids(self, batch_index: int = 0) -> list:
        """The word of each token (None for special tokens and padding), as transformers' fast tokenizers."""
        return self._details(1, batch_index, "word_ids")

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of one text (padding included)."""
        return self._details(2, batch_index, "tokens")

    def sequence_ids(self, batch_index: int = 0) -> list:
        """0 for each token of the text, None for special tokens and padding (CLIP has no pairs)."""
        return [None if word is None else 0 for word in self._details(1, batch_index, "sequence_ids")]


__all__ = [
    "BatchDict",
    "BatchEncoding",
    "BatchFeature",
    "TENSOR_TYPES",
    "as_tensor",
    "tensor_type_name",
    "to_framework",
]
