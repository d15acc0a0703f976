"""Images and texts through an encoder in batches: the small loop the eval and explain jobs share.

``encode_images(encoder, image_processor, images)`` takes file paths, PIL images or arrays and
returns ``(N, dim)`` normalised float32 embeddings; ``encode_texts(encoder, tokenizer, texts)`` the
same for strings. A file that cannot be read is a ValueError naming it. ``progress=True`` shows a
tqdm bar when tqdm is installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def progress_bar(total: int, enabled: bool, desc: str | None = None, unit: str = "it"):
    """A tqdm bar (on stderr) or None when disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int32, padded to the longest text, cut at ``max_length`` tokens.

    A text that is cut keeps ``<|endoftext|>`` as its last token (open_clip's rule) so that the text
    tower pools at an end of text, never at a cut-off word.
    """
    if isinstance(texts, str):
        texts = [texts]
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
    out = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ids = np.asarray(out["input_ids"], np.int32)
    mask = np.asarray(out["attention_mask"], np.int32)
    full = mask[:, -1] == 1  # the longest rows: already ending in <|endoftext|> unless cut
    ids[full, -1] = tokenizer.eos_token_id
    return ids, mask


def max_text_length(encoder) -> int:
    return int(encoder.config.text_config.max_position_embeddings)


def encode_texts(
    encoder,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "texts",
) -> np.ndarray:
    """``(len(texts), dim)`` normalised float32 text embeddings, ``batch_size`` texts per call."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts to encode")
    limit = max_text_length(encoder)
    return _in_batches(
        texts,
        batch_size,
        lambda batch: encoder.encode_texts(*tokenize_texts(tokenizer, batch, limit)),
        progress_bar(len(texts), progress, desc, "text"),
    )


def _in_batches(items: list, batch_size: int, encode, bar) -> np.ndarray:
    """``encode`` over consecutive batches of ``items``, concatenated as float32; the bar advanced."""
    out = []
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            out.append(encode(batch))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(out).astype(np.float32, copy=False)


def open_image(image):
    """A path opened as a PIL image (a clear ValueError naming an unreadable file); anything else as is."""
    if not isinstance(image, (str, os.PathLike)):
        return image
    from clip_core.image_inputs import decode_image

    path = os.fspath(image)
    try:
        return decode_image(path).convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def pixel_values(image_processor, images: Sequence) -> np.ndarray:
    """``(N, 3, H, W)`` float32 pixel values of the images (paths, PIL images or arrays)."""
    loaded = [open_image(im) for im in images]
    return np.asarray(image_processor(loaded, return_tensors="np")["pixel_values"], np.float32)


def encode_images(
    encoder,
    image_processor,
    images: Sequence,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "images",
) -> np.ndarray:
    """``(len(images), dim)`` normalised float32 image embeddings, ``batch_size`` images per call."""
    from clip_core.image_inputs import make_image_list

    images = make_image_list(images)  # one image, a list, or a 4-D batch array
    return _in_batches(
        images,
        batch_size,
        lambda batch: encoder.encode_images(pixel_values(image_processor, batch)),
        progress_bar(len(images), progress, desc, "img"),
    )


__all__ = ["encode_images", "encode_texts", "open_image", "pixel_values", "progress_bar", "tokenize_texts"]
