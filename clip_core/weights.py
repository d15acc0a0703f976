"""Checkpoints as canonical numpy state: the one import for loading and saving weights.

``load_state_dict(folder)`` gives ``{canonical name: np.ndarray}`` from any supported checkpoint,
``save_state_dict(state, folder, formats)`` writes one (through ``clip_core.formats.save_checkpoint``),
``random_state(config)`` makes one with sensible scales. The names and shapes live in
``clip_core.names``, the layout rules between frameworks in ``clip_core.layouts``, each file format
in ``clip_core.formats``; their public functions are importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from clip_core import formats as checkpoint_formats
from clip_core.folder_save import FolderSave
from clip_core.formats.safetensors_format import SafetensorsReader, write_safetensors_file
from clip_core.layouts import (  # noqa: F401 - the weights API in one import
    canonical_name_from_flax,
    canonical_name_from_tf,
    flax_path,
    from_channels_last,
    from_flax_params,
    from_tf_layout,
    param_kind,
    shape_from_channels_last,
    tf_weight_name,
    to_channels_last,
    to_flax_params,
    to_tf_layout,
)
from clip_core.names import (  # noqa: F401
    CANONICAL_ROOTS,
    MODEL_KINDS,
    CheckpointError,
    canonical_shapes,
    infer_model_kind,
    is_ignored,
    parameter_names,
    select_for_model,
    text_shapes,
    vision_shapes,
)

SAFETENSORS_NAME = "model.safetensors"


def random_state(config, kind: str = "clip", seed: int = 0) -> dict[str, np.ndarray]:
    """Random canonical fp32 weights for a model of ``kind`` with sensible scales: N(0, 0.02),
    LayerNorms at 1 / 0, CLIP's initial logit scale. The same seed gives the same tensors."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in canonical_shapes(config, kind).items():
        if name == "logit_scale":
            state[name] = np.asarray(config.logit_scale_init_value, np.float32)
        elif param_kind(name) == "layer_norm":
            state[name] = (np.ones if name.endswith("weight") else np.zeros)(shape, np.float32)
        else:
            state[name] = rng.normal(0.0, 0.02, shape).astype(np.float32)
    return state


# ---------------------------------------------------------------------------------------------
# model.safetensors: the lingua franca, readable with numpy alone


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of one safetensors file (any dtype, bf16 included), by its stored name."""
    with SafetensorsReader(os.fspath(path)) as reader:
        return {name: reader[name] for name in reader}


def write_safetensors(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """One safetensors file (atomic) holding every parameter of ``state``."""
    write_safetensors_file(state, os.fspath(path), parameter_names(state))


# ---------------------------------------------------------------------------------------------
# Whole checkpoints (the formats themselves live in clip_core.formats)


def open_checkpoint(
    pretrained: str | os.PathLike, cache_dir: str | None = None, verify: bool = False, **options
):
    """Lazy reader (Mapping name -> array, ``.info(name)``) over any supported checkpoint.

    Use it as a context manager to close the file; see clip_core.formats.open_checkpoint (and its
    ``options``: hub, prefer, use_safetensors, variant).
    """
    return checkpoint_formats.open_checkpoint(pretrained, cache_dir=cache_dir, verify=verify, **options)


def load_state_dict(
    pretrained: str | os.PathLike, cache_dir: str | None = None, verify: bool = False, **options
) -> dict[str, np.ndarray]:
    """Canonical tensors (torch names and layout) from a folder, a weights file or a Hub id.

    A folder is read in this preference: model.safetensors, its sharded index, pytorch_model.bin
    (only through torch.load(weights_only=True)), its index, tf_model.h5, flax_model.msgpack;
    ``options`` as in clip_core.formats.find_weights_file. verify: compare the files with the
    folder's checksums.sha256 first (CheckpointError if it is missing or any file differs).
    """
    with open_checkpoint(pretrained, cache_dir=cache_dir, verify=verify, **options) as reader:
        return {name: reader[name] for name in reader}


def save_state_dict(
    state: Mapping[str, np.ndarray],
    folder: str | os.PathLike,
    formats=("safetensors",),
    model_kind: str | None = None,
    max_shard_size: int | str | None = None,
) -> list[str]:
    """Write ``state`` into ``folder`` in each of ``formats``; returns the paths written.

    formats: "safetensors", "pytorch", "tf", "flax". model_kind ("clip", "text", "vision", ...;
    default inferred from the names) names the Keras model in tf_model.h5. The files land together
    or not at all (clip_core.folder_save); a checksum manifest already there is updated.
    """
    return save_folder(folder, state, formats=formats, model_kind=model_kind, max_shard_size=max_shard_size)


def save_folder(folder: str | os.PathLike, state: Mapping, config=None, **save_kwargs) -> list[str]:
    """The weights (and ``config.json`` when ``config`` is given) as one all-or-nothing save.

    With a config the folder gets a new checksums.sha256 listing exactly these files; without one an
    existing manifest is updated. Returns the paths written (weights first, then config.json)."""
    with FolderSave(folder, manifest="write" if config is not None else "update") as save:
        written = checkpoint_formats.save_checkpoint(state, save.staging, **save_kwargs)
        names = [os.path.basename(p) for p in written]
        if config is not None:
            names.append(os.path.basename(config.save_pretrained(save.staging)))
        save.supersede(checkpoint_formats.superseded_files(save.folder, names))
    return [os.path.join(save.folder, name) for name in names]
