"""The README's usage blocks run as written, against a tiny random model saved as a full folder."""

from __future__ import annotations

import os
import re

import numpy as np

from clip_core.image_processing import CLIPImageProcessor
from clip_core.processing import CLIPProcessor
from clip_core.tokenization_fast import CLIPTokenizerFast
from clip_core.weights import random_state, save_state_dict
from tests.tiny_configs import clip_config

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def usage_blocks() -> list[str]:
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Usage") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def tiny_folder(folder) -> None:
    config = clip_config()  # the full vocabulary, for the real tokenizer
    save_state_dict(random_state(config), folder)
    config.save_pretrained(folder)
    processor = CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), CLIPTokenizerFast()
    )
    processor.save_pretrained(folder)


def test_usage_blocks_run(tmp_path, monkeypatch):
    blocks = usage_blocks()
    assert len(blocks) == 4, "README usage: processor, torch, tf, flax"
    tiny_folder(tmp_path / "clip")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in blocks:
        exec(compile(block.replace("path/to/clip-folder", str(tmp_path / "clip")), README, "exec"), scope)
    assert scope["probs"].shape == (2, 2)
    assert np.isfinite(float(scope["out"].loss))
    # TF writes tf_model.h5 by default, as transformers' TF classes (which cannot read safetensors)
    for backend, weights in (
        ("torch", "model.safetensors"),
        ("tf", "tf_model.h5"),
        ("flax", "model.safetensors"),
    ):
        assert os.path.exists(tmp_path / f"out-{backend}" / weights)
