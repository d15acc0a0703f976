"""OpenAI's original CLIP state dicts (and open_clip's, for OpenAI-architecture ViT models).

Their names differ from transformers' in a few systematic ways: one fused ``in_proj`` for q, k, v;
``c_fc``/``c_proj`` for the MLP; ``ln_pre``/``ln_post``/``ln_final``; bare parameters for the
position embeddings and for the two projections, which are stored as ``[in, out]`` matrices.
The config is not stored with them, so it is inferred from the tensor shapes (heads = width / 64,
as in OpenAI's own builder).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import numpy as np

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

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
    if name in NON_WEIGHTS:
        return
    if name in _PLAIN:
        yield _PLAIN[name], array
        return
    if name in _TRANSPOSED:
        yield _TRANSPOSED[name], np.ascontiguousarray(np.transpose(array))
        return
    match = _BLOCK.match(name)
    if not match:
        raise ValueError(
            f"unknown tensor {name!r} with shape {tuple(np.shape(array))} in an OpenAI-format state dict"
        )
    tower = "vision_model" if match.group(1) else "text_model"
    prefix = f"{tower}.encoder.layers.{match.group(2)}"
    rest = match.group(3)
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.rsplit("_", 1)[1]
        for proj, part in zip(("q_proj", "k_proj", "v_proj"), np.split(np.asarray(array), 3, axis=0)):
            yield f"{prefix}.self_attn.{proj}.{kind}", np.ascontiguousarray(part)
        return
    module, leaf = rest.rsplit(".", 1)
    if module not in _BLOCK_PARTS:
        raise ValueError(f"unknown tensor {name!r} in an OpenAI-format state dict")
    yield f"{prefix}.{_BLOCK_PARTS[module]}.{leaf}", array


def to_canonical(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, array in unwrap(state).items():
        out.update(rename(name, array))
    return out


def _layer_count(names, prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}transformer\.resblocks\.(\d+)\.")
    found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if not found:
        raise ValueError(f"no {prefix}transformer.resblocks.* tensors: not an OpenAI-architecture ViT CLIP")
    return max(found) + 1


def infer_config(shapes: Mapping[str, tuple[int, ...]], hidden_act: str = "quick_gelu") -> CLIPConfig:
    """The CLIPConfig of an OpenAI/open_clip ViT state dict, from its tensor shapes alone.

    ``hidden_act`` cannot be read from weights: OpenAI's models and open_clip's ``-quickgelu``
    ones use quick_gelu, other open_clip models gelu.
    """
    shapes = {k: tuple(v) for k, v in unwrap(shapes).items()}
    if not is_openai_state_dict(shapes):
        raise ValueError("not an OpenAI-format CLIP state dict (no visual.conv1.weight / ln_final.weight)")
    vocab, text_width = shapes["token_embedding.weight"]
    vision_width, channels, patch, _ = shapes["visual.conv1.weight"]
    grid = round((shapes["visual.positional_embedding"][0] - 1) ** 0.5)
    text = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=text_width,
        intermediate_size=shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
        num_hidden_layers=_layer_count(shapes, ""),
        num_attention_heads=max(1, text_width // HEAD_WIDTH),
        max_position_embeddings=shapes["positional_embedding"][0],
        hidden_act=hidden_act,
        projection_dim=shapes["text_projection"][1],
        # OpenAI's vocabularies end with <|startoftext|>, <|endoftext|> (49406, 49407 in the usual one).
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=shapes["visual.transformer.resblocks.0.mlp.c_fc.weight"][0],
        num_hidden_layers=_layer_count(shapes, "visual."),
        num_attention_heads=max(1, vision_width // HEAD_WIDTH),
        num_channels=channels,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act=hidden_act,
        projection_dim=shapes["visual.proj"][1],
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=shapes["text_projection"][1])
