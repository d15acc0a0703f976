"""Canonical weight names, the few layout rules between frameworks, and checkpoint files.

Canonical names and layouts are transformers' PyTorch ``state_dict`` ones
(``text_model.encoder.layers.0.self_attn.q_proj.weight``, Dense ``[out, in]``). Every backend loads
and saves through ``dict[str, np.ndarray]`` keyed by those names; the rules below turn a canonical
tensor into a Flax/Keras one (kernel transposes, LayerNorm scale/gamma, embeddings) and back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_core.files import atomic_path

SAFETENSORS_NAME = "model.safetensors"

# Tensors that old checkpoints carry but that are not parameters (recomputed from the config).
IGNORED_SUFFIXES = ("embeddings.position_ids",)

LAYER_NORMS = ("layer_norm1", "layer_norm2", "final_layer_norm", "pre_layrnorm", "post_layernorm")
EMBEDDINGS = ("token_embedding", "position_embedding")
CONVS = ("patch_embedding",)

# What each public class holds, by canonical prefix.
MODEL_KINDS = ("clip", "text", "text_with_projection", "vision", "vision_with_projection")


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not fit the model: names and shapes are in the message."""


# ---------------------------------------------------------------------------------------------
# Canonical names and shapes


def _encoder_shapes(prefix: str, hidden: int, intermediate: int, layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"{prefix}.encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{p}.self_attn.{proj}.weight"] = (hidden, hidden)
            shapes[f"{p}.self_attn.{proj}.bias"] = (hidden,)
        shapes[f"{p}.layer_norm1.weight"] = (hidden,)
        shapes[f"{p}.layer_norm1.bias"] = (hidden,)
        shapes[f"{p}.mlp.fc1.weight"] = (intermediate, hidden)
        shapes[f"{p}.mlp.fc1.bias"] = (intermediate,)
        shapes[f"{p}.mlp.fc2.weight"] = (hidden, intermediate)
        shapes[f"{p}.mlp.fc2.bias"] = (hidden,)
        shapes[f"{p}.layer_norm2.weight"] = (hidden,)
        shapes[f"{p}.layer_norm2.bias"] = (hidden,)
    return shapes


def text_shapes(cfg: CLIPTextConfig) -> dict[str, tuple[int, ...]]:
    d = cfg.hidden_size
    shapes = {
        "text_model.embeddings.token_embedding.weight": (cfg.vocab_size, d),
        "text_model.embeddings.position_embedding.weight": (cfg.max_position_embeddings, d),
    }
    shapes.update(_encoder_shapes("text_model", d, cfg.intermediate_size, cfg.num_hidden_layers))
    shapes["text_model.final_layer_norm.weight"] = (d,)
    shapes["text_model.final_layer_norm.bias"] = (d,)
    return shapes


def vision_shapes(cfg: CLIPVisionConfig) -> dict[str, tuple[int, ...]]:
    d, p = cfg.hidden_size, cfg.patch_size
    shapes = {
        "vision_model.embeddings.class_embedding": (d,),
        "vision_model.embeddings.patch_embedding.weight": (d, cfg.num_channels, p, p),
        "vision_model.embeddings.position_embedding.weight": (cfg.num_patches + 1, d),
        "vision_model.pre_layrnorm.weight": (d,),
        "vision_model.pre_layrnorm.bias": (d,),
    }
    shapes.update(_encoder_shapes("vision_model", d, cfg.intermediate_size, cfg.num_hidden_layers))
    shapes["vision_model.post_layernorm.weight"] = (d,)
    shapes["vision_model.post_layernorm.bias"] = (d,)
    return shapes


def canonical_shapes(config, kind: str = "clip") -> dict[str, tuple[int, ...]]:
    """Every parameter a model of ``kind`` holds, with its canonical (torch-layout) shape."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    if kind == "clip":
        t, v = config.text_config, config.vision_config
        shapes = {**text_shapes(t), **vision_shapes(v)}
        shapes["visual_projection.weight"] = (config.projection_dim, v.hidden_size)
        shapes["text_projection.weight"] = (config.projection_dim, t.hidden_size)
        shapes["logit_scale"] = ()
        return shapes
    if kind.startswith("text"):
        shapes = text_shapes(config)
        if kind == "text_with_projection":
            shapes["text_projection.weight"] = (config.projection_dim, config.hidden_size)
        return shapes
    shapes = vision_shapes(config)
    if kind == "vision_with_projection":
        shapes["visual_projection.weight"] = (config.projection_dim, config.hidden_size)
    return shapes


def is_ignored(name: str) -> bool:
    return name.endswith(IGNORED_SUFFIXES)


def select_for_model(state: Mapping[str, np.ndarray], config, kind: str) -> dict[str, np.ndarray]:
    """The tensors of ``state`` that a model of ``kind`` needs, checked by name and shape.

    Tensors of the other tower (a text model loaded from a full CLIP checkpoint) are dropped
    silently, like transformers does; anything else missing, unexpected or misshapen raises.
    """
    expected = canonical_shapes(config, kind)
    state = {k: v for k, v in state.items() if not is_ignored(k)}
    known_elsewhere = set(canonical_shapes(_as_clip_config(config), "clip")) if kind != "clip" else set()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not _belongs_to_other_parts(k, known_elsewhere)]
    wrong = [
        f"{k}: checkpoint {tuple(np.shape(state[k]))}, model {expected[k]}"
        for k in expected
        if k in state and tuple(np.shape(state[k])) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} tensor(s): {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:10])}"
            + (" ..." if len(unexpected) > 10 else "")
        )
    if wrong:
        problems.append(f"wrong shape for {len(wrong)} tensor(s): {'; '.join(wrong[:10])}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + " | ".join(problems))
    return {k: np.asarray(state[k]) for k in expected}


def _as_clip_config(config) -> CLIPConfig:
    if isinstance(config, CLIPTextConfig):
        return CLIPConfig(text_config=config, projection_dim=config.projection_dim)
    if isinstance(config, CLIPVisionConfig):
        return CLIPConfig(vision_config=config, projection_dim=config.projection_dim)
    return config


def _belongs_to_other_parts(name: str, clip_names: set[str]) -> bool:
    # Shapes of the other tower are unknown here (its config is not given), so judge by name shape.
    if name in clip_names:
        return True
    return name.startswith(("text_model.", "vision_model.")) or name in (
        "text_projection.weight",
        "visual_projection.weight",
        "logit_scale",
    )


# ---------------------------------------------------------------------------------------------
# Layout rules between torch (canonical) and the channels-last frameworks (Flax, Keras)


def param_kind(name: str) -> str:
    """One of "dense", "conv", "layer_norm", "embedding", "vector", "scalar" for a canonical name."""
    if name == "logit_scale":
        return "scalar"
    parts = name.split(".")
    module = parts[-2] if len(parts) > 1 else ""
    if name.endswith("class_embedding"):
        return "vector"
    if module in LAYER_NORMS:
        return "layer_norm"
    if module in EMBEDDINGS:
        return "embedding"
    if module in CONVS:
        return "conv"
    return "dense"


def to_channels_last(name: str, array: np.ndarray) -> np.ndarray:
    """Canonical torch layout -> Flax/Keras layout of the same tensor."""
    kind = param_kind(name)
    if kind == "dense" and name.endswith(".weight"):
        return np.ascontiguousarray(np.transpose(array))
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(array, (2, 3, 1, 0)))
    return array


def from_channels_last(name: str, array: np.ndarray) -> np.ndarray:
    """Flax/Keras layout -> canonical torch layout (the inverse of ``to_channels_last``)."""
    kind = param_kind(name)
    if kind == "dense" and name.endswith(".weight"):
        return np.ascontiguousarray(np.transpose(array))
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(array, (3, 2, 0, 1)))
    return array


_FLAX_LEAF = {"layer_norm": "scale", "embedding": "embedding", "dense": "kernel", "conv": "kernel"}


def flax_path(name: str) -> tuple[str, ...]:
    """Canonical name -> path in a Flax params tree (and in transformers' flax_model.msgpack)."""
    parts = name.split(".")
    if parts[-1] == "weight":
        parts[-1] = _FLAX_LEAF[param_kind(name)]
    return tuple(parts)


def canonical_name_from_flax(path: tuple[str, ...]) -> str:
    parts = list(path)
    if parts[-1] in ("scale", "embedding", "kernel"):
        parts[-1] = "weight"
    return ".".join(parts)


def to_flax_params(state: Mapping[str, np.ndarray]) -> dict:
    """Canonical state -> nested Flax params dict (no ``params`` wrapper)."""
    tree: dict = {}
    for name, array in state.items():
        *parents, leaf = flax_path(name)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = to_channels_last(name, np.asarray(array))
    return tree


def from_flax_params(tree: Mapping) -> dict[str, np.ndarray]:
    """Nested Flax params dict (with or without a ``params`` wrapper) -> canonical state."""
    if set(tree) == {"params"}:
        tree = tree["params"]
    state: dict[str, np.ndarray] = {}

    def walk(node, path):
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, path + (str(key),))
            else:
                name = canonical_name_from_flax(path + (str(key),))
                state[name] = from_channels_last(name, np.asarray(value))

    walk(tree, ())
    return state


# ---------------------------------------------------------------------------------------------
# model.safetensors: the lingua franca, readable with numpy alone


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def write_safetensors(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    from safetensors.numpy import save_file

    # not ascontiguousarray: it turns a 0-d logit_scale into shape (1,)
    arrays = {k: np.asarray(v, order="C") for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------
# Whole checkpoints


def load_state_dict(pretrained: str | os.PathLike) -> dict[str, np.ndarray]:
    """Canonical tensors from a folder, a single weights file, or a Hub id (through its cache)."""
    from clip_core.files import resolve_file

    return read_safetensors(resolve_file(pretrained, SAFETENSORS_NAME))


def save_state_dict(state: Mapping[str, np.ndarray], folder: str | os.PathLike) -> list[str]:
    """Write ``state`` into ``folder`` as model.safetensors; returns the paths written."""
    path = os.path.join(os.fspath(folder), SAFETENSORS_NAME)
    write_safetensors(state, path)
    return [path]
