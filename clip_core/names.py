"""Canonical weight names and shapes, and the one table of model kinds.

Canonical names are transformers' PyTorch ``state_dict`` keys
(``text_model.encoder.layers.0.self_attn.q_proj.weight``) and canonical layouts its tensor shapes
(Dense ``[out, in]``, conv ``[out, in, kh, kw]``). Every backend and every file format goes through
them; ``clip_core.layouts`` holds the rules to and from the other frameworks' layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

# The floating dtypes a model computes or stores in, and every name users give them (the CLI's short
# names and numpy's); each caller decides what no dtype means.
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model: the file and tensors are named."""


@dataclass(frozen=True)
class ModelKind:
    """What one public class holds, and how transformers names it in each place."""

    name: str  # "clip", "text", "text_with_projection", "vision", "vision_with_projection"
    config_class: type
    architecture: str  # transformers' PyTorch class, written to config.json "architectures"
    tf_model_name: str  # the Keras model name in transformers' tf_model.h5

    @property
    def with_projection(self) -> bool:
        """A tower model that also holds its projection (text_embeds / image_embeds)."""
        return self.name.endswith("_with_projection")


MODEL_KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind("clip", CLIPConfig, "CLIPModel", "tfclip_model"),
        ModelKind("text", CLIPTextConfig, "CLIPTextModel", "tfclip_text_model"),
        ModelKind(
            "text_with_projection",
            CLIPTextConfig,
            "CLIPTextModelWithProjection",
            "tfclip_text_model_with_projection",
        ),
        ModelKind("vision", CLIPVisionConfig, "CLIPVisionModel", "tfclip_vision_model"),
        ModelKind(
            "vision_with_projection",
            CLIPVisionConfig,
            "CLIPVisionModelWithProjection",
            "tfclip_vision_model_with_projection",
        ),
    )
}


def model_kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {tuple(MODEL_KINDS)}, got {name!r}")
    return MODEL_KINDS[name]


# The first component of every canonical name.
CANONICAL_ROOTS = ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale")
PROJECTIONS = ("text_projection.weight", "visual_projection.weight")

# Tensors that old checkpoints carry but that are not parameters (recomputed from the config).
IGNORED_SUFFIXES = ("embeddings.position_ids",)


def is_ignored(name: str) -> bool:
    return name.endswith(IGNORED_SUFFIXES)


def parameter_names(state: Mapping) -> list[str]:
    """Names to write: buffers that old checkpoints carry (position_ids) are not parameters."""
    return [name for name in state.keys() if not is_ignored(name)]


def infer_model_kind(names) -> str:
    """ "clip", "text[_with_projection]" or "vision[_with_projection]" from the tensor names."""
    names = set(names)
    has_text = any(n.startswith("text_model.") for n in names)
    has_vision = any(n.startswith("vision_model.") for n in names)
    if "logit_scale" in names or has_text == has_vision:
        return "clip"
    if has_text:
        return "text_with_projection" if "text_projection.weight" in names else "text"
    return "vision_with_projection" if "visual_projection.weight" in names else "vision"


# ---------------------------------------------------------------------------------------------
# Shapes


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
    model_kind(kind)
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


# ---------------------------------------------------------------------------------------------
# Does a checkpoint fit a model?


def _is_other_part(name: str) -> bool:
    # A tower model loaded from a full CLIP checkpoint ignores the other tower, the projections
    # and the temperature (shapes unknown without their config: judged by name).
    return name.startswith(("text_model.", "vision_model.")) or name in (*PROJECTIONS, "logit_scale")


def _listed(label: str, items: list[str], sep: str = ", ") -> str:
    more = " ..." if len(items) > 10 else ""
    return f"{label} {len(items)} tensor(s): {sep.join(items[:10])}{more}"


def fit_problems(shapes: Mapping[str, tuple[int, ...]], config, kind: str) -> list[str]:
    """What keeps tensors of these canonical ``shapes`` from filling a model of ``kind`` (empty if none).

    Tensors of the other tower are accepted (as transformers does); logit_scale may have shape (1,)
    (transformers' TF files).
    """
    expected = canonical_shapes(config, kind)
    names = [n for n in shapes if not is_ignored(n)]
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in names if n not in expected and (kind == "clip" or not _is_other_part(n))]
    wrong = [
        f"{n}: checkpoint {tuple(shapes[n])}, model {expected[n]}"
        for n in names
        if n in expected
        and tuple(shapes[n]) != expected[n]
        and not (n == "logit_scale" and tuple(shapes[n]) == (1,))
    ]
    problems = []
    if missing:
        problems.append(_listed("missing", missing))
    if unexpected:
        problems.append(_listed("unexpected", unexpected))
    if wrong:
        problems.append(_listed("wrong shape for", wrong, "; "))
    return problems


def select_for_model(state: Mapping[str, np.ndarray], config, kind: str) -> dict[str, np.ndarray]:
    """The tensors of ``state`` that a model of ``kind`` needs, checked by name and shape.

    Tensors of the other tower (a text model loaded from a full CLIP checkpoint) are dropped
    silently, like transformers does; anything else missing, unexpected or misshapen raises.
    """
    problems = fit_problems({k: np.shape(v) for k, v in state.items()}, config, kind)
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + " | ".join(problems))
    return {k: np.asarray(state[k]).reshape(shape) for k, shape in canonical_shapes(config, kind).items()}
