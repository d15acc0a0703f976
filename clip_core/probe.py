"""A probe of coloured shapes and their captions, drawn at any model's image size: what clip-export
checks an export on, and what its int8 report measures zero-shot agreement on.

The colours and shapes are the ones clip_flax.data.SyntheticShapes trains on ("a red circle"), so a
model trained on them (clip-finetune-flax --synthetic) recognises the probe, and its zero-shot
accuracy there says what a quantised export costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


@dataclasses.dataclass
class Probe:
    pixel_values: np.ndarray  # (n, 3, H, W) float32, normalised as CLIP's processor does
    labels: np.ndarray  # (n,) index into class_names
    class_names: list[str]
    input_ids: np.ndarray  # (classes, T) int64: one caption per class, padded to the longest
    attention_mask: np.ndarray


def shape_mask(shape: str, size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """A boolean (size, size) mask of a circle, square, triangle or cross."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = (y - centre[0]) / radius, (x - centre[1]) / radius
    if shape == "circle":
        return dx**2 + dy**2 <= 1.0
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "triangle":  # apex up: the half-width grows from 0 at the top to 1 at the bottom
        return (dy >= -1.0) & (dy <= 1.0) & (np.abs(dx) <= (dy + 1.0) / 2.0)
    return ((np.abs(dx) <= 0.25) & (np.abs(dy) <= 1.0)) | ((np.abs(dy) <= 0.25) & (np.abs(dx) <= 1.0))


def make_probe(config, per_class: int = 2, seed: int = 0, tokenizer=None) -> Probe:
    """Shapes images (``per_class`` of each colour-shape pair) and a caption per class, "a red circle".

    Captions are tokenized with ``tokenizer`` (the model's own, when its folder has one), else with
    OpenAI's vocabulary when the model has it; a model with neither gets random ids ending in its
    end-of-text rule (enough for checking an export, meaningless for zero-shot accuracy).
    """
    vision, text = config.vision_config, config.text_config
    size = vision.image_size
    class_names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(class_names)), per_class)
    images = np.empty((len(labels), size, size, 3), np.float32)
    for i, label in enumerate(labels):
        colour, shape = class_names[label].split(" ")
        radius = rng.uniform(0.2, 0.35) * size
        centre = rng.uniform(radius, size - radius, 2)
        image = np.broadcast_to(rng.integers(0, 90, 3) + rng.integers(0, 2) * 150, (size, size, 3)).copy()
        image[shape_mask(shape, size, centre, radius)] = COLOURS[colour]
        images[i] = np.clip(image + rng.normal(0, 8, image.shape), 0, 255)
    pixel_values = ((images / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).astype(np.float32)
    ids, mask = caption_ids(text, [f"a {name}" for name in class_names], rng, tokenizer)
    return Probe(pixel_values, labels, class_names, ids, mask)


def caption_ids(text_config, captions: Sequence[str], rng, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    if tokenizer is None and text_config.vocab_size == 49408 and not text_config.uses_legacy_eos_pooling:
        from clip_core.tokenization import CLIPTokenizer

        tokenizer = CLIPTokenizer()
    if tokenizer is not None:
        out = tokenizer(list(captions), padding=True, return_tensors="np")
        return np.asarray(out["input_ids"], np.int64), np.asarray(out["attention_mask"], np.int64)
    n, length = len(captions), min(8, text_config.max_position_embeddings)
    eos = text_config.vocab_size - 1 if text_config.uses_legacy_eos_pooling else text_config.eos_token_id
    ids = rng.integers(3, min(text_config.vocab_size - 1, 1000), (n, length))
    ids[:, -1] = eos
    return ids.astype(np.int64), np.ones((n, length), np.int64)
