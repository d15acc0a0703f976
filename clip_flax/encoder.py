"""The encoder protocol (clip_core.encoder) on JAX: jitted towers, numpy in and out."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from clip_core.encoder import (
    bucket,
    check_patch_path,
    checked_pixels,
    checked_tokens,
    dtype_name,
    l2_normalize,
    pad_rows,
    pad_tokens,
)
from clip_flax.modeling import FlaxCLIPModel, FlaxCLIPModule


def _patch_states(module: FlaxCLIPModule, pixels, path: str):
    """Run inside ``module.apply``: the last layer's patch tokens, or its value path (MaskCLIP),
    through post_layernorm and visual_projection."""
    vision = module.vision_model
    if path == "tokens":
        states = vision(pixels).last_hidden_state
    else:
        last = vision.encoder.layers.layers[-1]
        x = vision(pixels, output_hidden_states=True).hidden_states[-2]  # the last layer's input
        states = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
    return module.visual_projection(vision.post_layernorm(states[:, 1:]))  # class token dropped


def _token_states(module: FlaxCLIPModule, ids, mask):
    """Run inside ``module.apply``: every final_layer_norm state through text_projection."""
    return module.text_projection(module.text_model(ids, mask).last_hidden_state)


class FlaxEncoder:
    """A FlaxCLIPModel's feature methods under ``jax.jit`` (params stay on the device).

    Batches are padded to a power of two and texts to a multiple of 8 tokens, so XLA compiles a
    handful of shapes rather than one per batch. ``dtype`` is the compute dtype (params float32).

    Example:
        >>> encoder = FlaxEncoder.from_pretrained("path/to/clip", dtype="bf16")
        >>> image_embeds = encoder.encode_images(pixel_values)
    """

    def __init__(self, model: FlaxCLIPModel, dtype=None):
        compute = model.dtype if dtype is None else getattr(jnp, dtype_name(dtype))
        module = FlaxCLIPModule(model.config, dtype=compute, param_dtype=model.param_dtype)
        self.model, self.config = model, model.config
        self.params = jax.device_put(model.params)
        self._images = jax.jit(  # channels-first pixels in, the Linen module takes channels-last
            lambda params, p: module.apply(
                {"params": params}, jnp.transpose(p, (0, 2, 3, 1)), method=FlaxCLIPModule.get_image_features
            )
        )
        self._texts = jax.jit(
            lambda params, i, m: module.apply(
                {"params": params}, i, m, method=FlaxCLIPModule.get_text_features
            )
        )
        self._patches = jax.jit(
            lambda params, p, path: module.apply(
                {"params": params}, jnp.transpose(p, (0, 2, 3, 1)), path, method=_patch_states
            ),
            static_argnums=2,
        )
        self._tokens = jax.jit(
            lambda params, i, m: module.apply({"params": params}, i, m, method=_token_states)
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None) -> FlaxEncoder:
        return cls(FlaxCLIPModel.from_pretrained(path), dtype)

    @property
    def logit_scale(self) -> float:
        return float(jnp.exp(jnp.asarray(self.params["logit_scale"], jnp.float32)))

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixel_values, np.float32)
        count = pixels.shape[0]
        out = self._images(self.params, pad_rows(pixels, bucket(count)))
        return l2_normalize(np.asarray(out, np.float32)[:count])

    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        ids = np.asarray(input_ids, np.int32)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
        count = ids.shape[0]
        ids, mask = pad_tokens(ids, mask, limit=self.config.text_config.max_position_embeddings)
        rows = bucket(count)
        out = self._texts(self.params, pad_rows(ids, rows), pad_rows(mask, rows))
        return l2_normalize(np.asarray(out, np.float32)[:count])

    def encode_image_patches(self, pixel_values: np.ndarray, path: str = "values") -> np.ndarray:
        """(B, grid_h * grid_w, projection_dim), unit rows: the last layer's patch ``"tokens"`` or its
        value path (``"values"``, MaskCLIP), through post_layernorm and the projection (clip_core.encoder)."""
        pixels = checked_pixels(self.config, pixel_values)
        count = pixels.shape[0]
        out = self._patches(self.params, pad_rows(pixels, bucket(count)), check_patch_path(path))
        return l2_normalize(np.asarray(out, np.float32)[:count])

    def encode_text_tokens(
        self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, T, projection_dim): every token's final_layer_norm state through text_projection."""
        ids, mask = checked_tokens(self.config, input_ids, attention_mask)
        count, length = ids.shape
        ids, mask = pad_tokens(ids, mask, limit=self.config.text_config.max_position_embeddings)
        rows = bucket(count)
        out = self._tokens(self.params, pad_rows(ids, rows), pad_rows(mask, rows))
        return l2_normalize(np.asarray(out, np.float32)[:count, :length])
