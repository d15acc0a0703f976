"""OpenAI's original CLIP state dicts (and open_clip's, for OpenAI-architecture ViT models): the one
place that knows their names.

Their names differ from transformers' in a few systematic ways: one fused ``in_proj`` for q, k, v;
``c_fc``/``c_proj`` for the MLP; ``ln_pre``/``ln_post``/``ln_final``; bare parameters for the
position embeddings and for the two projections, which are stored as ``[in, out]`` matrices.
``openai_targets(name)`` says, for one OpenAI name, which canonical tensor(s) it becomes and how
(as is, transposed, or one third of a fused q/k/v). Everything here goes through it: the lazy
``OpenAIView`` (a reader that renames another reader's tensors as they are read), the eager
``rename`` / ``to_canonical``, and ``infer_config``.

The config is not stored with these files, so it is inferred from the tensor shapes
(``infer_config_from_canonical``; heads = width / 64, as in OpenAI's own builder).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import numpy as np

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_core.formats.base import CheckpointReader
from clip_core.names import CheckpointError, is_ignored

HEAD_WIDTH = 64  # OpenAI's models fix the width per head; the head count follows from the width.
# Entries of OpenAI's JIT archives that are not weights.
NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask", "visual.attn_mask")

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_PLAIN = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
TRANSPOSE = "T"  # an op: the canonical tensor is the transpose; 0, 1, 2: that third of a fused q/k/v


# ---------------------------------------------------------------------------------------------
# The mapping


def openai_targets(name: str) -> list[tuple[str, object]] | None:
    """(canonical name, op) for each tensor the OpenAI tensor ``name`` becomes; op is None (as
    is), TRANSPOSE, or 0 / 1 / 2 (q / k / v of a fused in_proj). [] for entries that are not
    weights; None for a name that is not OpenAI's."""
    if name in NON_WEIGHTS or is_ignored(name):
        return []
    if name in _PLAIN:
        return [(_PLAIN[name], None)]
    if name in _TRANSPOSED:
        return [(_TRANSPOSED[name], TRANSPOSE)]
    match = _BLOCK.match(name)
    if not match:
        return None
    tower = "vision_model" if match.group(1) else "text_model"
    layer = f"{tower}.encoder.layers.{match.group(2)}"
    rest = match.group(3)
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        leaf = rest.rsplit("_", 1)[1]
        return [
            (f"{layer}.self_attn.{proj}.{leaf}", i) for i, proj in enumerate(("q_proj", "k_proj", "v_proj"))
        ]
    module, _, leaf = rest.rpartition(".")
    if module not in _BLOCK_PARTS:
        return None
    return [(f"{layer}.{_BLOCK_PARTS[module]}.{leaf}", None)]


def _unknown(name: str, where: str = "") -> CheckpointError:
    return CheckpointError(f"{where}unknown tensor {name!r} in an OpenAI-format state dict")


def target_shape(op, shape: tuple[int, ...], name: str = "") -> tuple[int, ...]:
    """The canonical shape that ``op`` makes of an OpenAI tensor of ``shape``."""
    shape = tuple(int(d) for d in shape)
    if op == TRANSPOSE:
        return shape[::-1]
    if op is None:
        return shape
    if not shape or shape[0] % 3:
        raise CheckpointError(f"fused {name} of shape {shape} cannot split into q, k, v")
    return (shape[0] // 3, *shape[1:])


def apply(op, array: np.ndarray) -> np.ndarray:
    """The canonical tensor that ``op`` makes of an OpenAI tensor."""
    if op == TRANSPOSE:
        return np.ascontiguousarray(np.transpose(array))
    if op is None:
        return array
    third = array.shape[0] // 3
    return np.ascontiguousarray(array[op * third : (op + 1) * third])


# ---------------------------------------------------------------------------------------------
# Lazy and eager renaming


class OpenAIView(CheckpointReader):
    """Canonical names over an OpenAI / open_clip state dict read by ``reader``; in_proj split and
    projections transposed when a tensor is read. ``prefix`` ("module.") is cut from every name."""

    def __init__(self, reader: CheckpointReader, prefix: str = ""):
        super().__init__(reader.path)
        self._reader = reader
        self._map: dict[str, tuple[str, object]] = {}
        for source in reader.keys():
            targets = openai_targets(source[len(prefix) :])
            if targets is None:
                raise _unknown(source, f"{self.path}: ")
            for name, op in targets:
                self._map[name] = (source, op)

    def keys(self):
        return self._map.keys()

    def info(self, name):
        source, op = self._map[name]
        shape, dtype = self._reader.info(source)
        try:
            return target_shape(op, shape, source), dtype
        except CheckpointError as e:
            raise CheckpointError(f"{self.path}: {e}") from None

    def get_tensor(self, name):
        source, op = self._map[name]
        return apply(op, self._reader[source])

    def close(self):
        self._reader.close()


def unwrap(state: Mapping) -> Mapping:
    """Training checkpoints wrap the weights ({"state_dict": ...}) and DDP prefixes them with "module."."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def is_openai_state_dict(names) -> bool:
    names = set(names)
    return "visual.conv1.weight" in names and "ln_final.weight" in names


def rename(name: str, array: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """One OpenAI tensor -> the canonical tensor(s) it becomes (a fused in_proj gives three)."""
    targets = openai_targets(name)
    if targets is None:
        raise _unknown(name)
    for target, op in targets:
        target_shape(op, np.shape(array), name)
        yield target, apply(op, np.asarray(array))


def to_canonical(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A whole OpenAI / open_clip state dict (wrapped or not) -> canonical tensors."""
    out: dict[str, np.ndarray] = {}
    for name, array in unwrap(state).items():
        out.update(rename(name, array))
    return out


# ---------------------------------------------------------------------------------------------
# Config from shapes


def _layer_count(names, tower: str) -> int:
    pattern = re.compile(rf"^{tower}\.encoder\.layers\.(\d+)\.")
    found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if not found:
        raise CheckpointError(f"no {tower}.encoder.layers.* tensors: not a ViT CLIP")
    return max(found) + 1


def infer_config_from_canonical(
    shapes: Mapping[str, tuple[int, ...]], hidden_act: str = "quick_gelu"
) -> CLIPConfig:
    """A CLIPConfig from canonical tensor shapes (heads are not stored: width / 64, as OpenAI's).

    ``hidden_act`` cannot be read from weights: OpenAI's models and open_clip's ``-quickgelu``
    ones use quick_gelu, other open_clip models gelu.
    """
    need = ("text_model.embeddings.token_embedding.weight", "vision_model.embeddings.patch_embedding.weight")
    if not all(n in shapes for n in need):
        raise CheckpointError("cannot infer a config from the weights of a single tower: pass --config")
    vocab, text_width = shapes[need[0]]
    vision_width, channels, patch, _ = shapes[need[1]]
    grid = round((shapes["vision_model.embeddings.position_embedding.weight"][0] - 1) ** 0.5)
    projection_dim = shapes["text_projection.weight"][0]
    text = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=text_width,
        intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=_layer_count(shapes, "text_model"),
        num_attention_heads=max(1, text_width // HEAD_WIDTH),
        max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
        hidden_act=hidden_act,
        projection_dim=projection_dim,
        # OpenAI's vocabularies end with <|startoftext|>, <|endoftext|> (49406, 49407 in the usual one).
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=_layer_count(shapes, "vision_model"),
        num_attention_heads=max(1, vision_width // HEAD_WIDTH),
        num_channels=channels,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act=hidden_act,
        projection_dim=shapes["visual_projection.weight"][0],
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def infer_config(shapes: Mapping[str, tuple[int, ...]], hidden_act: str = "quick_gelu") -> CLIPConfig:
    """The CLIPConfig of an OpenAI/open_clip ViT state dict, from its tensor shapes alone (names
    that are not OpenAI's are passed over)."""
    shapes = unwrap(shapes)
    if not is_openai_state_dict(shapes):
        raise ValueError("not an OpenAI-format CLIP state dict (no visual.conv1.weight / ln_final.weight)")
    canonical = {}
    for name, shape in shapes.items():
        for target, op in openai_targets(name) or ():
            canonical[target] = target_shape(op, shape, name)
    return infer_config_from_canonical(canonical, hidden_act)
