"""The framework-free half of every backend's ``from_pretrained`` / ``save_pretrained``.

A backend asks for (config, canonical numpy state) and turns the arrays into its own tensors; on
save it hands back canonical arrays. Config choice, file formats and checks live here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from clip_core.names import model_kind, select_for_model
from clip_core.weights import load_state_dict, save_state_dict


def load_config(pretrained: str | os.PathLike, kind: str):
    """The config a model of ``kind`` needs; a tower's config is taken from a full CLIP config too."""
    return model_kind(kind).config_class.from_pretrained(pretrained)


def load_pretrained(pretrained: str | os.PathLike, kind: str, config=None):
    """(config, state) for a model of ``kind``: state holds exactly its canonical tensors, checked."""
    config = config if config is not None else load_config(pretrained, kind)
    state = load_state_dict(pretrained)
    return config, select_for_model(state, config, kind)


def save_pretrained(
    folder: str | os.PathLike, config, state: Mapping[str, np.ndarray], **save_kwargs
) -> list[str]:
    """Write config.json and the weights; each file lands atomically."""
    if os.path.isfile(folder):
        raise ValueError(f"save_pretrained expects a folder, got the file {folder}")
    os.makedirs(folder, exist_ok=True)
    written = save_state_dict(state, folder, **save_kwargs)
    return written + [config.save_pretrained(folder)]
