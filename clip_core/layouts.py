"""The few layout rules between canonical (torch) tensors and the other frameworks' own.

- Dense kernels are ``[out, in]`` in torch, ``[in, out]`` in Flax and Keras; the patch conv is
  ``[out, in, kh, kw]`` in torch, ``[kh, kw, in, out]`` elsewhere.
- LayerNorm ``weight``/``bias`` are Flax's ``scale``/``bias`` and Keras' ``gamma``/``beta``;
  embeddings are ``embedding`` in Flax, ``weight`` (tokens) or ``embeddings`` (positions) in
  transformers' TF files, ``embeddings`` in Keras 3.
- transformers' TF weight names are ``/``-separated, list layers as ``layers_._N`` and end in ``:0``;
  ``logit_scale`` has shape ``(1,)`` there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from clip_core.names import CANONICAL_ROOTS

LAYER_NORMS = ("layer_norm1", "layer_norm2", "final_layer_norm", "pre_layrnorm", "post_layernorm")
EMBEDDINGS = ("token_embedding", "position_embedding")
CONVS = ("patch_embedding",)


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
