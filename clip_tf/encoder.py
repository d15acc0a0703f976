"""The encoder protocol (clip_core.encoder) on TensorFlow: XLA-compiled towers, numpy in and out."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from clip_core.encoder import bucket, dtype_name, l2_normalize, pad_rows, pad_tokens
from clip_tf.modeling import TFCLIPModel

# Keras dtype policies by compute dtype; bf16/fp16 compute keeps float32 variables.
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class TFEncoder:
    """A TFCLIPModel's feature methods under ``tf.function(jit_compile=True)``.

    Batches are padded to a power of two and texts to a multiple of 8 tokens, so XLA compiles a
    handful of shapes rather than one per batch.

    Example:
        >>> encoder = TFEncoder.from_pretrained("path/to/clip")
        >>> text_embeds = encoder.encode_texts(ids, mask)  # (B, projection_dim) float32, unit rows
    """

    def __init__(self, model: TFCLIPModel, dtype=None):
        if dtype is not None and _POLICIES[dtype_name(dtype)] != model.dtype_policy.name:
            raise ValueError(
                f"this TFCLIPModel computes in {model.dtype_policy.name}, not {dtype}: load it with "
                "TFEncoder.from_pretrained(path, dtype) (a Keras model's dtype policy is fixed when built)"
            )
        self.model = model
        self.config = model.config
        self._images = tf.function(lambda p: model.get_image_features(pixel_values=p), jit_compile=True)
        self._texts = tf.function(
            lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=True
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None) -> TFEncoder:
        return cls(TFCLIPModel.from_pretrained(path, dtype=_POLICIES[dtype_name(dtype)]), dtype)

    @property
    def logit_scale(self) -> float:
        return float(tf.exp(tf.cast(self.model.logit_scale, tf.float32)))

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixel_values, np.float32)
        count = pixels.shape[0]
        out = self._images(tf.constant(pad_rows(pixels, bucket(count))))
        return l2_normalize(tf.cast(out, tf.float32).numpy()[:count])

    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        ids = np.asarray(input_ids, np.int32)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
        count = ids.shape[0]
        ids, mask = pad_tokens(ids, mask, limit=self.config.text_config.max_position_embeddings)
        rows = bucket(count)
        out = self._texts(tf.constant(pad_rows(ids, rows)), tf.constant(pad_rows(mask, rows)))
        return l2_normalize(tf.cast(out, tf.float32).numpy()[:count])
