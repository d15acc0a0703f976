"""Shared by the eval / explain / plot tests: the committed shapes CLIP (tools/train_shapes.py made it),
fresh shapes to test it on, and a tiny random CLIP folder complete with tokenizer and preprocessor."""

import os

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.image_processing import CLIPImageProcessor
from clip_core.processing import CLIPProcessor
from clip_core.tokenization_fast import CLIPTokenizerFast
from clip_core.weights import random_state, save_state_dict
from clip_flax.data import SyntheticShapes

SHAPES_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "shapes-clip")
EVAL_SEED = 4321  # training used seed 0; these images were never seen


def fresh_shapes(n: int, seed: int = EVAL_SEED, size: int = 64) -> SyntheticShapes:
    return SyntheticShapes(n, size, seed=seed)


def examples_of(class_name: str, count: int, seed: int = EVAL_SEED, size: int = 64):
    """(images, masks) of ``count`` fresh examples of one class ("red circle")."""
    shapes = fresh_shapes(max(60 * count, 240), seed, size)
    wanted = shapes.class_names.index(class_name)
    rows = [i for i in range(len(shapes)) if shapes.label(i) == wanted][:count]
    assert len(rows) == count
    return [shapes.draw(i) for i in rows], np.stack([shapes.mask(i) for i in rows])


def random_clip_folder(path, config_dict: dict, seed: int = 0) -> str:
    """A random CLIP of ``config_dict`` saved with the bundled tokenizer and a sized image processor."""
    config = CLIPConfig.from_dict(config_dict)
    save_state_dict(random_state(config, seed=seed), path)
    config.save_pretrained(path)
    size = config.vision_config.image_size
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=CLIPTokenizerFast(),
    )
    processor.save_pretrained(path)
    return str(path)
