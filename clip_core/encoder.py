"""The tiny protocol every job is written against, and how to get one for a backend.

An encoder turns numpy inputs into L2-normalised numpy embeddings in the joint space:

- ``encode_images(pixel_values)``: ``(B, C, H, W)`` float32 (the image processor's output) ->
  ``(B, projection_dim)`` float32;
- ``encode_texts(input_ids, attention_mask)``: ``(B, T)`` integer arrays -> ``(B, projection_dim)``;
- ``config``: the model's CLIPConfig (image size, context length, projection size);
- ``logit_scale``: ``exp(logit_scale)`` of the model, the temperature of its logits.

Two optional methods give the towers' per-position states in the same joint space (the
explainability maps use them; every backend here has both):

- ``encode_image_patches(pixel_values, path="values")`` -> ``(B, grid_h * grid_w, projection_dim)``,
  L2-normalised per patch, patches in row-major order of the patch grid. Two ways in (``PATCH_PATHS``):

  - ``"tokens"``: each patch token of the vision tower's last_hidden_state (class token left out)
    through ``post_layernorm`` and ``visual_projection``, exactly as the pooled class token is;
  - ``"values"`` (default): dense features after MaskCLIP (Zhou et al., ECCV 2022): the last encoder
    layer's value path alone, ``out_proj(v_proj(layer_norm1(x)))`` of its input x, with no
    query-key attention, residual or MLP, then ``post_layernorm`` and ``visual_projection``.

  In a trained CLIP the last layer's patch tokens serve the class token rather than describe their
  patch, and their similarity with a text is highest on the background (CLIP Surgery's "opposite
  visualisation"); the value path keeps each patch's own content. On the shapes CLIP of
  tests/data/shapes-clip (480 fresh images, its training.json) the most text-like patch lies inside
  the named shape for 20 % of images with "tokens" (a random patch: 22 %) and 68 % with "values".
- ``encode_text_tokens(input_ids, attention_mask)`` -> ``(B, T, projection_dim)``: every position of
  the text tower's last_hidden_state (already after ``final_layer_norm``) through
  ``text_projection``, L2-normalised per token. The end-of-text row is ``encode_texts``' embedding;
  rows at padded positions (mask 0) are computed but mean nothing.
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol, runtime_checkable

import numpy as np

from clip_core.names import DTYPE_ALIASES

# backend name -> (module, class, the pip extra that provides its framework)
BACKENDS = {
    "torch": ("clip_torch.encoder", "TorchEncoder", "torch"),
    "tf": ("clip_tf.encoder", "TFEncoder", "tf"),
    "flax": ("clip_flax.encoder", "FlaxEncoder", "flax"),
    "onnx": ("clip_core.onnx_engine", "OnnxEncoder", "onnx"),  # an ONNX export run by ONNX Runtime
}


@runtime_checkable
class Encoder(Protocol):
    config: object

    @property
    def logit_scale(self) -> float: ...

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray: ...


PATCH_PATHS = ("values", "tokens")


def check_patch_path(path: str) -> str:
    if path not in PATCH_PATHS:
        raise ValueError(f"unknown patch path {path!r}: choose one of {', '.join(PATCH_PATHS)}")
    return path


def has_patch_encoders(encoder) -> bool:
    """True when ``encoder`` also gives per-patch and per-token embeddings (the optional methods)."""
    return callable(getattr(encoder, "encode_image_patches", None)) and callable(
        getattr(encoder, "encode_text_tokens", None)
    )


def checked_pixels(config, pixel_values) -> np.ndarray:
    """``pixel_values`` as float32 numpy, checked against the vision config (clear ValueError)."""
    from clip_core.validation import check_pixel_values

    pixels = np.asarray(pixel_values, np.float32)
    check_pixel_values(pixels.shape, getattr(config, "vision_config", config))
    return pixels


def checked_tokens(config, input_ids, attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) as int32 numpy (mask of ones when None), checked against the text config."""
    from clip_core.validation import check_text_inputs

    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
    integer = np.issubdtype(ids.dtype, np.integer)
    id_range = (int(ids.min()), int(ids.max())) if integer and ids.size else None
    text_config = getattr(config, "text_config", config)
    check_text_inputs(text_config, ids.shape, mask.shape, id_range=id_range, integer_ids=integer)
    return ids.astype(np.int32), mask.astype(np.int32)


def dtype_name(dtype) -> str:
    """ "float32", "bfloat16" or "float16" for a short or long name (or a framework dtype's str)."""
    if dtype is None:
        return "float32"
    name = str(dtype).rsplit(".", 1)[-1]
    if name not in DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of fp32, bf16, fp16")
    return DTYPE_ALIASES[name]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in float32 (embeddings leave every encoder this way)."""
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def load_encoder(
    model: str | os.PathLike | object, backend: str = "torch", dtype: str | None = None
) -> Encoder:
    """An encoder for ``model`` (a checkpoint folder, a cached Hub id, or a loaded CLIPModel of the
    backend) on ``backend`` ("torch", "tf", "flax"; "onnx": a clip-export ONNX folder on ONNX Runtime).

    ``dtype``: None or "fp32" (float32), "bf16" or "fp16" compute, where the backend supports it.
    A missing framework is a clear ImportError naming the pip extra to install.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    module_name, class_name, extra = BACKENDS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"the {backend} backend needs its framework ({e.name or e}); "
            f"install it with: pip install 'clip-multibackend[{extra}]'"
        ) from None
    encoder_class = getattr(module, class_name)
    if isinstance(model, (str, os.PathLike)):
        return encoder_class.from_pretrained(model, dtype=dtype)
    return encoder_class(model, dtype=dtype)


def bucket(n: int, smallest: int = 1) -> int:
    """The next power of two >= n (>= smallest): compiled backends see a few shapes, not one per size."""
    size = max(1, smallest)
    while size < n:
        size *= 2
    return size


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with copies of its last row appended up to ``rows`` rows (outputs are sliced back)."""
    missing = rows - array.shape[0]
    return array if missing <= 0 else np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


def pad_tokens(
    input_ids: np.ndarray, attention_mask: np.ndarray, multiple: int = 8, limit: int | None = None
):
    """Ids and mask padded on the right to a multiple of ``multiple`` tokens (at most ``limit``).

    Extra positions repeat each row's last id with mask 0; the causal mask keeps them from changing
    any earlier position, so the pooled embedding is the same.
    """
    length = input_ids.shape[1]
    target = -(-length // multiple) * multiple
    if limit is not None:
        target = max(length, min(target, limit))
    if target == length:
        return input_ids, attention_mask
    extra = target - length
    ids = np.concatenate([input_ids, np.repeat(input_ids[:, -1:], extra, axis=1)], axis=1)
    mask = np.concatenate(
        [attention_mask, np.zeros((attention_mask.shape[0], extra), attention_mask.dtype)], axis=1
    )
    return ids, mask
