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


def shape_from_channels_last(name: str, shape) -> tuple[int, ...]:
    """The canonical shape of a tensor stored with channels-last ``shape`` (no data touched)."""
    shape = tuple(int(d) for d in shape)
    kind = param_kind(name)
    if kind == "dense" and name.endswith(".weight"):
        return shape[::-1]
    if kind == "conv" and len(shape) == 4:
        return tuple(shape[i] for i in (3, 2, 0, 1))
    return shape


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


# transformers' TF names (tf_model.h5): the same tree, "/"-separated, ``layers_._N`` for layer
# lists, ``:0`` suffixes, LayerNorm gamma/beta, and two different embedding leaf names.

# The first component of every canonical name; in an h5 path everything before it is a Keras
# model/layer prefix (``clip/tfclip_model/clip/``) that varies with the saving class.
CANONICAL_ROOTS = ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale")

_TF_WEIGHT_LEAF = {"layer_norm": "gamma", "dense": "kernel", "conv": "kernel"}
_TF_EMBEDDING_LEAF = {"token_embedding": "weight", "position_embedding": "embeddings"}
_FROM_TF_LEAF = {"gamma": "weight", "beta": "bias", "kernel": "weight", "embeddings": "weight"}


def tf_weight_name(name: str) -> str:
    """Canonical name -> transformers' TF weight name below the main layer, e.g.
    ``text_model/encoder/layers_._0/layer_norm1/gamma:0``."""
    parts = name.split(".")
    kind = param_kind(name)
    if parts[-1] == "weight":
        parts[-1] = _TF_EMBEDDING_LEAF[parts[-2]] if kind == "embedding" else _TF_WEIGHT_LEAF[kind]
    elif parts[-1] == "bias" and kind == "layer_norm":
        parts[-1] = "beta"
    path = "/".join(parts)
    return path.replace("/layers/", "/layers_._") + ":0"


def canonical_name_from_tf(path: str) -> str:
    """A TF weight name or h5 dataset path (any Keras prefix) -> canonical name.

    Paths without a CLIP component are returned unchanged, so that they are reported as
    unexpected tensors by name rather than silently dropped.
    """
    parts = path.split("/")
    roots = [i for i, p in enumerate(parts) if p.split(":")[0] in CANONICAL_ROOTS]
    if not roots:
        return path
    parts = parts[roots[0] :]
    parts[-1] = parts[-1].split(":")[0]
    name = ".".join(parts).replace("_._", ".")
    *parents, leaf = name.split(".")
    if leaf in _FROM_TF_LEAF:
        leaf = _FROM_TF_LEAF[leaf]
    return ".".join([*parents, leaf])


def to_tf_layout(name: str, array: np.ndarray) -> np.ndarray:
    """Canonical tensor -> its layout in transformers' tf_model.h5 (logit_scale has shape (1,))."""
    array = to_channels_last(name, np.asarray(array))
    return array.reshape(1) if param_kind(name) == "scalar" else array


def from_tf_layout(name: str, array: np.ndarray) -> np.ndarray:
    array = from_channels_last(name, np.asarray(array))
    return array.reshape(()) if param_kind(name) == "scalar" else array


# ---------------------------------------------------------------------------------------------
# model.safetensors: the lingua franca, readable with numpy alone


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of one safetensors file (any dtype, bf16 included), by its stored name."""
    from clip_core.formats.safetensors_format import SafetensorsReader

    with SafetensorsReader(os.fspath(path)) as reader:
        return {name: reader[name] for name in reader}


def write_safetensors(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """One safetensors file (atomic) holding every parameter of ``state``."""
    from clip_core.formats.base import parameter_names
    from clip_core.formats.safetensors_format import write_safetensors_file

    write_safetensors_file(state, os.fspath(path), parameter_names(state))


# ---------------------------------------------------------------------------------------------
# Whole checkpoints (the formats themselves live in clip_core.formats)


def open_checkpoint(pretrained: str | os.PathLike, cache_dir: str | None = None):
    """Lazy reader (Mapping name -> array, ``.info(name)``) over any supported checkpoint.

    Use it as a context manager to close the file; see clip_core.formats.open_checkpoint.
    """
    from clip_core.formats import open_checkpoint as _open

    return _open(pretrained, cache_dir=cache_dir)


def load_state_dict(pretrained: str | os.PathLike, cache_dir: str | None = None) -> dict[str, np.ndarray]:
    """Canonical tensors (torch names and layout) from a folder, a weights file or a Hub id.

    A folder is read in this preference: model.safetensors, its sharded index, pytorch_model.bin
    (only through torch.load(weights_only=True)), its index, tf_model.h5, flax_model.msgpack.
    """
    with open_checkpoint(pretrained, cache_dir=cache_dir) as reader:
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
    default inferred from the names) names the Keras model in tf_model.h5. Each file is atomic.
    """
    from clip_core.formats import save_checkpoint

    return save_checkpoint(state, folder, formats, model_kind=model_kind, max_shard_size=max_shard_size)
