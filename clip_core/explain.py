"""Which image regions match which words: similarity maps on the patch grid, for every backend.

CLIP scores an image against a text by the cosine of two pooled embeddings. Projected the same way,
every image patch and every text token also has an embedding in the joint space (the encoder
protocol's ``encode_image_patches`` and ``encode_text_tokens``, see clip_core.encoder), and their
cosines make the maps here:

- ``patch_maps(encoder, pixel_values, text_embeds)``: ``(images, texts, grid_h, grid_w)``, the
  cosine of each patch with each text's embedding (the map is a heatmap on the patch grid);
- ``token_maps(encoder, pixel_values, input_ids, attention_mask)``: per text token, its cosine with
  the image embedding ``(B, T)`` and with each patch ``(B, T, grid_h, grid_w)``.

``path`` picks the patch embeddings: ``"values"`` (default; MaskCLIP: the last layer's value path)
or ``"tokens"`` (the last layer's patch tokens). A trained CLIP's last-layer patch tokens are most
similar to the text on the background, not on the object (CLIP Surgery, Li et al. 2023, calls it
"opposite visualisation"); on the shapes CLIP the "tokens" map's peak is inside the named shape less
often than chance, the "values" map's three times as often (README). Both are gradient-free and
leave the model as it is, so PyTorch, TensorFlow and JAX give the same maps (to 1e-5,
tests/test_explain.py). For what the pooled embedding used, clip_torch.explain has the
gradient-weighted attention relevance of Chefer et al. (PyTorch only).

``Explainer`` wraps an encoder and the model's processor: ``Explainer.from_pretrained(model, backend)``,
then ``image_text_maps(images, texts)`` and ``token_maps(image, text)``. ``upsample`` stretches a
map to the image (bilinear), and ``peak_hit_rate`` measures how often a map's peak lies inside a
given mask (the figure the shapes model is tested on).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from clip_core.encoder import check_patch_path, has_patch_encoders, l2_normalize
from clip_core.encoding import pixel_values as to_pixel_values
from clip_core.encoding import tokenize_texts


def grid_shape(config, pixel_values=None) -> tuple[int, int]:
    """(grid_h, grid_w) of the patch grid for the config's image size (or the pixels' size)."""
    vision = getattr(config, "vision_config", config)
    if pixel_values is None:
        size = (vision.image_size, vision.image_size)
    else:
        size = np.shape(pixel_values)[-2:]
    return size[0] // vision.patch_size, size[1] // vision.patch_size


def _require_patches(encoder) -> None:
    if not has_patch_encoders(encoder):
        raise TypeError(
            f"{type(encoder).__name__} gives no per-patch embeddings (encode_image_patches / encode_text_tokens); "
            "use a backend encoder from clip_core.encoder.load_encoder"
        )


def patch_maps(
    encoder, pixel_values: np.ndarray, text_embeds: np.ndarray, path: str = "values"
) -> np.ndarray:
    """``(B, T, grid_h, grid_w)`` float32: cosine of each image patch with each text embedding."""
    _require_patches(encoder)
    patches = encoder.encode_image_patches(pixel_values, path)  # (B, P, D), unit rows
    texts = l2_normalize(np.atleast_2d(text_embeds))
    maps = np.einsum("bpd,td->btp", patches, texts)
    return maps.reshape(*maps.shape[:2], *grid_shape(encoder.config, pixel_values)).astype(np.float32)


def token_maps(
    encoder,
    pixel_values: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    path: str = "values",
) -> tuple[np.ndarray, np.ndarray]:
    """(token_scores ``(B, T)``, maps ``(B, T, grid_h, grid_w)``) for pairs (image b, text b).

    ``token_scores[b, t]``: cosine of token t of text b with image b's embedding; ``maps[b, t]`` its
    cosine with each patch of image b. Padded positions (mask 0) are NaN.
    """
    _require_patches(encoder)
    tokens = encoder.encode_text_tokens(input_ids, attention_mask)  # (B, T, D)
    patches = encoder.encode_image_patches(pixel_values, path)  # (B, P, D)
    image = encoder.encode_images(pixel_values)  # (B, D)
    if len(tokens) != len(image):
        raise ValueError(
            f"token_maps pairs image b with text b: got {len(image)} images and {len(tokens)} texts"
        )
    scores = np.einsum("btd,bd->bt", tokens, image)
    maps = np.einsum("btd,bpd->btp", tokens, patches)
    maps = maps.reshape(*maps.shape[:2], *grid_shape(encoder.config, pixel_values))
    if attention_mask is not None:
        pad = np.asarray(attention_mask) == 0
        scores = np.where(pad, np.nan, scores)
        maps = np.where(pad[:, :, None, None], np.nan, maps)
    return scores.astype(np.float32), maps.astype(np.float32)


def upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``map2d`` stretched to ``size`` (height, width) by bilinear interpolation (PIL), float32."""
    from PIL import Image

    height, width = size
    image = Image.fromarray(np.ascontiguousarray(map2d, np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def peak(map2d: np.ndarray) -> tuple[int, int]:
    """(row, col) of the largest value (the first in row-major order on ties)."""
    index = int(np.nanargmax(map2d))
    return divmod(index, map2d.shape[1])


def patch_centres_in_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``(grid_h, grid_w)`` bool: whether each patch's centre pixel lies inside ``mask`` (H, W)."""
    mask = np.asarray(mask, bool)
    rows = ((np.arange(grid[0]) + 0.5) * mask.shape[0] / grid[0]).astype(int)
    cols = ((np.arange(grid[1]) + 0.5) * mask.shape[1] / grid[1]).astype(int)
    return mask[np.ix_(rows, cols)]


def peak_hit_rate(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """How often the peak patch of ``maps[i]`` (N, grid_h, grid_w) has its centre inside ``masks[i]``
    (N, H, W, in pixel_values' coordinates), against chance: the share of patch centres inside."""
    maps, masks = np.asarray(maps), np.asarray(masks, bool)
    if len(maps) != len(masks) or len(maps) == 0:
        raise ValueError(f"peak_hit_rate needs one mask per map, got {len(maps)} maps and {len(masks)} masks")
    hits, chance = [], []
    for m, mask in zip(maps, masks):
        inside = patch_centres_in_mask(mask, m.shape)
        hits.append(bool(inside[peak(m)]))
        chance.append(float(inside.mean()))
    return {"hit_rate": float(np.mean(hits)), "chance": float(np.mean(chance)), "images": len(hits)}


def heatmap_hit_rate(
    encoder,
    pixel_values: np.ndarray,
    text_embeds: np.ndarray,
    masks: np.ndarray,
    path: str = "values",
    batch_size: int = 64,
) -> dict[str, float]:
    """``peak_hit_rate`` of each image's map for its own text embedding (``text_embeds[i]`` for image i)."""
    _require_patches(encoder)
    texts = l2_normalize(text_embeds)
    maps = []
    for start in range(0, len(pixel_values), batch_size):
        patches = encoder.encode_image_patches(pixel_values[start : start + batch_size], path)
        maps.append(np.einsum("bpd,bd->bp", patches, texts[start : start + batch_size]))
    grid = grid_shape(encoder.config, pixel_values)
    return peak_hit_rate(np.concatenate(maps).reshape(-1, *grid), masks)


def token_strings(tokenizer, input_ids: Sequence[int]) -> list[str]:
    """Readable tokens: '</w>' dropped, the special tokens shortened to <sot> and <eot>."""
    names = []
    for token in tokenizer.convert_ids_to_tokens([int(i) for i in input_ids]):
        token = {"<|startoftext|>": "<sot>", "<|endoftext|>": "<eot>"}.get(token, token)
        names.append(token.replace("</w>", ""))
    return names


@dataclasses.dataclass
class ImageTextMaps:
    """``maps`` (images, texts, grid_h, grid_w) patch cosines; ``scores`` (images, texts) the pooled
    embeddings' cosines; ``pixel_values`` as the model saw the images."""

    maps: np.ndarray
    scores: np.ndarray
    texts: list[str]
    pixel_values: np.ndarray


@dataclasses.dataclass
class TokenMaps:
    """One image and one text: ``tokens`` (readable), ``token_scores`` (T,) cosine of each token with
    the image, ``maps`` (T, grid_h, grid_w) each token's cosine with each patch; ``score`` the text's."""

    tokens: list[str]
    token_scores: np.ndarray
    maps: np.ndarray
    score: float


class Explainer:
    """An encoder with the model's tokenizer and image processor, for the maps of this module.

    ``path``: the patch embeddings, "values" (MaskCLIP, default) or "tokens" (clip_core.encoder).

    Example:
        >>> ex = Explainer.from_pretrained("path/to/clip", backend="tf")
        >>> result = ex.image_text_maps(["cat.jpg"], ["a cat", "a dog"])
        >>> result.maps.shape  # (1, 2, 7, 7) for ViT-B/32 at 224 px
    """

    def __init__(self, encoder, tokenizer, image_processor, path: str = "values") -> None:
        _require_patches(encoder)
        self.encoder, self.tokenizer, self.image_processor = encoder, tokenizer, image_processor
        self.path = check_patch_path(path)

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike, backend: str = "torch", dtype: str | None = None, path: str = "values"
    ) -> Explainer:
        from clip_core.encoder import load_encoder
        from clip_core.processing import CLIPProcessor

        processor = CLIPProcessor.from_pretrained(model)
        encoder = load_encoder(model, backend, dtype)
        return cls(encoder, processor.tokenizer, processor.image_processor, path)

    def _tokens(self, texts: Sequence[str]):
        return tokenize_texts(
            self.tokenizer, texts, int(self.encoder.config.text_config.max_position_embeddings)
        )

    def image_text_maps(self, images, texts: Sequence[str]) -> ImageTextMaps:
        texts = [texts] if isinstance(texts, str) else list(texts)
        from clip_core.image_inputs import make_image_list

        pixels = to_pixel_values(self.image_processor, make_image_list(images))
        text_embeds = self.encoder.encode_texts(*self._tokens(texts))
        scores = self.encoder.encode_images(pixels) @ text_embeds.T
        return ImageTextMaps(patch_maps(self.encoder, pixels, text_embeds, self.path), scores, texts, pixels)

    def token_maps(self, image, text: str) -> TokenMaps:
        pixels = to_pixel_values(self.image_processor, [image])
        ids, mask = self._tokens([text])
        scores, maps = token_maps(self.encoder, pixels, ids, mask, self.path)
        keep = mask[0] == 1
        score = float(self.encoder.encode_images(pixels)[0] @ self.encoder.encode_texts(ids, mask)[0])
        return TokenMaps(token_strings(self.tokenizer, ids[0][keep]), scores[0][keep], maps[0][keep], score)


__all__ = [
    "Explainer",
    "ImageTextMaps",
    "TokenMaps",
    "grid_shape",
    "heatmap_hit_rate",
    "patch_centres_in_mask",
    "patch_maps",
    "peak",
    "peak_hit_rate",
    "token_maps",
    "token_strings",
    "upsample",
]
