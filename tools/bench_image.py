"""Benchmark rows: preprocessing 32 photos of 640x480 with CLIPImageProcessor vs transformers' (slow) one.

Exposes ``rows(ctx)`` for tools/bench.py. The outputs are checked to be equal (max abs diff <= 1e-5)
before anything is timed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

NUM_PHOTOS = 32
WIDTH, HEIGHT = 640, 480


def make_photos(count: int = NUM_PHOTOS) -> list[Image.Image]:
    """Deterministic 640x480 RGB photos: crops of skimage's sample photos at several scales, half mirrored."""
    import skimage.data

    sources = [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    photos = []
    for i in range(count):
        source = Image.fromarray(sources[i % len(sources)])
        scale = max(WIDTH / source.width, HEIGHT / source.height) * (1 + 0.1 * (i // len(sources)))
        source = source.resize((int(np.ceil(source.width * scale)), int(np.ceil(source.height * scale))), 2)
        left = (source.width - WIDTH) * ((i * 7) % 5) // 4
        top = (source.height - HEIGHT) * ((i * 3) % 5) // 4
        photo = source.crop((left, top, left + WIDTH, top + HEIGHT))
        photos.append(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else photo)
    return photos


def rows(ctx) -> list[dict]:
    from transformers import CLIPImageProcessor as TheirProcessor

    from clip_core.image_processing import CLIPImageProcessor

    photos = make_photos()
    ours, theirs = CLIPImageProcessor(), TheirProcessor()
    expected = theirs(photos, return_tensors="np")["pixel_values"]
    for threads in (1, None):
        got = ours(photos, return_tensors="np", num_threads=threads)["pixel_values"]
        diff = float(np.abs(got - expected).max())
        if got.shape != expected.shape or diff > 1e-5:
            raise AssertionError(f"outputs differ from transformers: shape {got.shape}, max abs diff {diff}")

    runs = 3 if ctx.quick else 5
    theirs_s = ctx.time(lambda: theirs(photos, return_tensors="np"), warmup=1, runs=runs)
    serial_s = ctx.time(lambda: ours(photos, return_tensors="np", num_threads=1), warmup=1, runs=runs)
    threaded_s = ctx.time(lambda: ours(photos, return_tensors="np"), warmup=1, runs=runs)
    row = {
        "section": "image preprocessing (32 photos 640x480 -> 224x224, equal output)",
        "what": "image preprocessing",
        "theirs": "transformers CLIPImageProcessor (slow, PIL)",
        "unit": "img/s",
        "theirs_value": NUM_PHOTOS / theirs_s,
    }
    return [
        {**row, "ours": "clip_core CLIPImageProcessor, 1 thread", "ours_value": NUM_PHOTOS / serial_s},
        {
            **row,
            "ours": "clip_core CLIPImageProcessor, default threads",
            "ours_value": NUM_PHOTOS / threaded_s,
        },
    ]
