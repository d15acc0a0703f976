"""The encoder protocol (clip_core.encoder) on TensorFlow: XLA-compiled towers, numpy in and out."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from clip_core.encoder import (
    PATCH_PATHS,
    bucket,
    check_patch_path,
    checked_pixels,
    checked_tokens,
    dtype_name,
    l2_normalize,
    pad_rows,
    pad_tokens,
)
from clip_tf.modeling import TFCLIPModel, apply_dense, apply_layer_norm


class _QuietBucketRetracing:
    """Drops TF's "triggered tf.function retracing" warning. The encoder traces once per shape
    bucket on purpose (a handful of shapes, each compiled by XLA once); the warning, meant for
    accidental retracing, would otherwise print several times in every long clip-embed run."""

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING_FILTER = _QuietBucketRetracing()

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
        tf.get_logger().addFilter(_RETRACING_FILTER)  # the same filter object: added once
        self._images = tf.function(lambda p: model.get_image_features(pixel_values=p), jit_compile=True)
        self._texts = tf.function(
            lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=True
        )
        self._patches = {
            path: tf.function(lambda p, path=path: self._patch_states(p, path), jit_compile=True)
            for path in PATCH_PATHS
        }
        self._tokens = tf.function(self._token_states, jit_compile=True)

    def _patch_states(self, pixels, path):
        vision = self.model.vision_model
        if path == "tokens":
            states = vision(pixels).last_hidden_state
        else:  # MaskCLIP: the last layer's value path on its input
            last = vision.encoder.layers[-1]
            x = vision(pixels, output_hidden_states=True).hidden_states[-2]
            x = apply_layer_norm(last.layer_norm1, x)
            states = apply_dense(last.self_attn.out_proj, apply_dense(last.self_attn.v_proj, x))
        patches = apply_layer_norm(vision.post_layernorm, states[:, 1:])  # class token dropped
        return apply_dense(self.model.visual_projection, patches)

    def _token_states(self, ids, mask):
        states = self.model.text_model(ids, mask).last_hidden_state  # after final_layer_norm
        return apply_dense(self.model.text_projection, states)

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

    def encode_image_patches(self, pixel_values: np.ndarray, path: str = "values") -> np.ndarray:
        """(B, grid_h * grid_w, projection_dim), unit rows: the last layer's patch ``"tokens"`` or its
        value path (``"values"``, MaskCLIP), through post_layernorm and the projection (clip_core.encoder)."""
        pixels = checked_pixels(self.config, pixel_values)
        count = pixels.shape[0]
        out = self._patches[check_patch_path(path)](tf.constant(pad_rows(pixels, bucket(count))))
        return l2_normalize(tf.cast(out, tf.float32).numpy()[:count])

    def encode_text_tokens(
        self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, T, projection_dim): every token's final_layer_norm state through text_projection."""
        ids, mask = checked_tokens(self.config, input_ids, attention_mask)
        count, length = ids.shape
        ids, mask = pad_tokens(ids, mask, limit=self.config.text_config.max_position_embeddings)
        rows = bucket(count)
        out = self._tokens(tf.constant(pad_rows(ids, rows)), tf.constant(pad_rows(mask, rows)))
        return l2_normalize(tf.cast(out, tf.float32).numpy()[:count, :length])
