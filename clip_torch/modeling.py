"""CLIP on PyTorch: CLIPModel, CLIPTextModel(WithProjection), CLIPVisionModel(WithProjection).

This file is the reference the other two backends mirror block for block (clip_tf/modeling.py,
clip_flax/modeling.py: same names, same order), so the architecture is explained here once:
embeddings, attention, MLP, encoder layer, encoder, text transformer, vision transformer, loss,
public classes. Module attributes carry transformers' PyTorch names, so ``state_dict()`` keys are
the canonical names (``vision_model.pre_layrnorm.weight``, ...) and a checkpoint loads with
``torch.from_numpy`` and no renaming. No ``position_ids`` buffers: positions are made on the fly,
so the state dict holds parameters only. The framework-free glue (config coercion, output options,
input checks, init rules, loading and saving) is in clip_core; the torch half of loading, init and
input handling in clip_torch/pretrained.py.

The one attention convention of all three backends: queries are scaled by head_dim ** -0.5, the
additive mask is in the compute dtype (its most negative value), the softmax runs in float32 and
the probabilities go back to the compute dtype. Here it runs through
``F.scaled_dot_product_attention`` unless attention maps are requested or
``attn_implementation="eager"``. Gradient checkpointing is one switch:
``CLIPModel(config, gradient_checkpointing=True)`` or ``model.gradient_checkpointing_enable()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip_core.config import CLIPTextConfig, CLIPVisionConfig
from clip_core.interpolation import position_resize_matrix
from clip_core.modeling_utils import (
    activation,
    activations,
    as_requested,
    clip_inputs,
    clip_output,
    output_flags,
    run_layers,
    text_output,
    vision_output,
)
from clip_core.outputs import BaseModelOutputWithPooling
from clip_torch.pretrained import CLIPPreTrainedModel

ACTIVATIONS = activations(
    sigmoid=torch.sigmoid,
    tanh=torch.tanh,
    gelu_erf=F.gelu,
    gelu_tanh=lambda x: F.gelu(x, approximate="tanh"),
    relu=F.relu,
)

# Embeddings


class CLIPTextEmbeddings(nn.Module):
    """Token embedding + learned absolute position embedding (positions 0..T-1 unless given)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device)[None, :]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPVisionEmbeddings(nn.Module):
    """Patches (a bias-free conv with stride = kernel = patch size) + a learned class token in front
    + learned position embeddings, from channels-first pixels (B, C, H, W) -> (B, 1 + patches, C)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=False,
        )
        self.position_embedding = nn.Embedding(config.num_patches + 1, config.hidden_size)

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype))  # (B, C, grid_h, grid_w)
        grid_h, grid_w = patches.shape[-2], patches.shape[-1]
        patches = patches.flatten(2).transpose(1, 2)  # (B, grid_h * grid_w, C)
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)
        positions = self.position_embedding.weight
        if interpolate_pos_encoding:  # the trained grid resized bicubically, class position kept
            positions = (
                _resize_matrix(self.config.num_patches, int(grid_h), int(grid_w)).to(positions) @ positions
            )
        return torch.cat([class_token, patches], dim=1) + positions[None]


@torch.compiler.disable
def _resize_matrix(num_patches: int, grid_h: int, grid_w: int):
    return torch.from_numpy(position_resize_matrix(num_patches, grid_h, grid_w))


# Attention, MLP, encoder layer, encoder


class CLIPAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections; ``attention_bias`` (0 or the
    dtype's most negative value) is added to the scores. Dropout on the probabilities when training."""

    def __init__(self, config, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.attn_implementation = attn_implementation
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x):  # (B, T, C) -> (B, heads, T, head_dim)
        return x.unflatten(-1, (self.config.num_attention_heads, self.config.head_dim)).transpose(1, 2)

    def forward(self, hidden_states, attention_bias=None, output_attentions=False):
        query = self._heads(self.q_proj(hidden_states) * self.config.head_dim**-0.5)
        key = self._heads(self.k_proj(hidden_states))
        value = self._heads(self.v_proj(hidden_states))
        dropout = self.config.attention_dropout if self.training else 0.0
        probs = None
        if output_attentions or self.attn_implementation == "eager":
            scores = torch.matmul(query, key.transpose(-1, -2))  # (B, heads, T, T)
            if attention_bias is not None:
                scores = scores + attention_bias
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
            context = torch.matmul(F.dropout(probs, p=dropout, training=self.training), value)
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_bias, dropout_p=dropout, scale=1.0
            )
        return self.out_proj(context.transpose(1, 2).flatten(2)), probs


class CLIPMLP(nn.Module):
    """fc1 (hidden -> intermediate), the config's activation (quick_gelu for OpenAI's models), fc2."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation = activation(ACTIVATIONS, config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config, attn_implementation: str = "sdpa"):
        super().__init__()
        self.self_attn = CLIPAttention(config, attn_implementation)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_bias=None, output_attentions=False):
        attended, probs = self.self_attn(self.layer_norm1(hidden_states), attention_bias, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, probs


class CLIPEncoder(nn.Module):
    """num_hidden_layers encoder layers, named ``layers.<i>``; the same stack in both towers."""

    def __init__(self, config, attn_implementation: str = "sdpa"):
        super().__init__()
        self.layers = nn.ModuleList(
            CLIPEncoderLayer(config, attn_implementation) for _ in range(config.num_hidden_layers)
        )
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states, attention_bias=None, output_attentions=False, output_hidden_states=False
    ):
        """(last hidden state, all hidden states or None, attention maps or None); the hidden
        states start with the layer input, as transformers'."""
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()

        def call(layer, x):
            if recompute:  # activations recomputed in the backward pass
                return checkpoint(layer, x, attention_bias, output_attentions, use_reentrant=False)
            return layer(x, attention_bias, output_attentions)

        return run_layers(self.layers, hidden_states, call, output_attentions, output_hidden_states)


# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype, device):
    """Causal mask plus padding mask, as an additive (B or 1, 1, T, T) bias in the compute dtype.

    Masked scores get the dtype's most negative value, as in transformers (a key masked both ways
    gets -inf; a row whose every visible key is padding attends uniformly to them).
    """
    most_negative = torch.finfo(dtype).min
    bias = torch.full((seq_len, seq_len), most_negative, dtype=dtype, device=device).triu(1)[None, None]
    if attention_mask is not None:
        bias = bias + (1.0 - attention_mask.to(dtype))[:, None, None, :] * most_negative
    return bias


def first_index_where(condition):
    """Index of the first True per row ((B, T) -> (B,)); 0 for a row with none."""
    return condition.int().argmax(dim=-1)


class CLIPTextTransformer(nn.Module):
    """Embeddings -> causal encoder (padding masked) -> final_layer_norm; pooled at the end-of-text token."""

    def __init__(self, config: CLIPTextConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config, attn_implementation)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions=False,
        output_hidden_states=False,
    ):
        hidden_states = self.embeddings(input_ids, position_ids=position_ids)
        bias = text_attention_bias(input_ids.shape[-1], attention_mask, hidden_states.dtype, input_ids.device)
        last, all_hidden, attentions = self.encoder(
            hidden_states, bias, output_attentions, output_hidden_states
        )
        last = self.final_layer_norm(last)
        pooled = last[torch.arange(last.shape[0], device=last.device), self.pooling_positions(input_ids)]
        return BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)

    def pooling_positions(self, input_ids):
        """Where each text is pooled: its first ``eos_token_id``, or ``argmax(input_ids)`` for configs
        written before transformers' fix (eos_token_id == 2), which relies on <|endoftext|> being the
        largest id and breaks for added tokens (hence the eos rule)."""
        if self.config.uses_legacy_eos_pooling:  # OpenAI's rule: end-of-text has the largest id
            return first_index_where(input_ids == input_ids.amax(dim=-1, keepdim=True))
        return first_index_where(input_ids == self.config.eos_token_id)


class CLIPVisionTransformer(nn.Module):
    """Embeddings -> pre_layrnorm -> encoder (no mask) -> post_layernorm of the class token = pooled."""

    def __init__(self, config: CLIPVisionConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic: canonical
        self.encoder = CLIPEncoder(config, attn_implementation)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        pixel_values,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
    ):
        hidden_states = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        last, all_hidden, attentions = self.encoder(
            hidden_states, None, output_attentions, output_hidden_states
        )
        pooled = self.post_layernorm(last[:, 0, :])
        return BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)


# Loss


def contrastive_loss(logits):
    """Mean cross-entropy of each row against the diagonal (text i matches image i)."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def clip_loss(logits_per_text):
    """Symmetric CLIP loss: the mean of the text->image and image->text cross-entropies, in float32.

    The logits are ``exp(logit_scale) * text_embeds @ image_embeds.T`` of L2-normalised embeddings.
    """
    logits = logits_per_text.float()
    return (contrastive_loss(logits) + contrastive_loss(logits.t())) / 2.0


def l2_normalize(x):
    return x / x.norm(p=2, dim=-1, keepdim=True)


# Public classes


class _TextTower(CLIPPreTrainedModel):
    """CLIPTextModel and, with ``with_projection``, CLIPTextModelWithProjection (one code path)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(self.config, self.attn_implementation)
        if self.with_projection:
            self.text_projection = nn.Linear(self.config.hidden_size, self.config.projection_dim, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        inputs = self._text_inputs(self.config, input_ids, attention_mask, position_ids)
        output = self.text_model(
            *inputs, **output_flags(self.config, output_attentions, output_hidden_states)
        )
        if self.with_projection:
            output = text_output(output, self.text_projection(output.pooler_output))
        return as_requested(output, self.config, return_dict)


class _VisionTower(CLIPPreTrainedModel):
    """CLIPVisionModel and, with ``with_projection``, CLIPVisionModelWithProjection (one code path)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.vision_model = CLIPVisionTransformer(self.config, self.attn_implementation)
        if self.with_projection:
            self.visual_projection = nn.Linear(
                self.config.hidden_size, self.config.projection_dim, bias=False
            )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        pixels = self._pixel_inputs(self.config, pixel_values, interpolate_pos_encoding)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        output = self.vision_model(pixels, **flags, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        if self.with_projection:
            output = vision_output(output, self.visual_projection(output.pooler_output))
        return as_requested(output, self.config, return_dict)


class CLIPTextModel(_TextTower):
    """The text tower (an nn.Module): last_hidden_state and pooler_output (the end-of-text state).

    Args:
        config: a CLIPTextConfig (or a full CLIPConfig's dict, or a transformers config).
        gradient_checkpointing: recompute each layer's activations in the backward pass.
        attn_implementation: "sdpa" (default) or "eager".

    Example:
        >>> model = CLIPTextModel.from_pretrained("path/to/clip")  # eval mode
        >>> with torch.no_grad():
        ...     out = model(**tokenizer(["a photo of a cat"], return_tensors="pt", padding=True))
    """

    model_kind = "text"


class CLIPTextModelWithProjection(_TextTower):
    """The text tower and text_projection: ``text_embeds`` as CLIPModel projects them (not normalised).

    Example:
        >>> model = CLIPTextModelWithProjection.from_pretrained("path/to/clip", dtype=torch.bfloat16)
        >>> embeds = model(**tokenizer(texts, return_tensors="pt", padding=True)).text_embeds
    """

    model_kind = "text_with_projection"


class CLIPVisionModel(_VisionTower):
    """The vision tower (an nn.Module): last_hidden_state and pooler_output (the class token).

    Example:
        >>> model = CLIPVisionModel.from_pretrained("path/to/clip")
        >>> out = model(**processor(images=images, return_tensors="pt"))
    """

    model_kind = "vision"


class CLIPVisionModelWithProjection(_VisionTower):
    """The vision tower and visual_projection: ``image_embeds`` as CLIPModel projects them.

    Example:
        >>> model = CLIPVisionModelWithProjection.from_pretrained("path/to/clip")
        >>> embeds = model(pixel_values=pixels).image_embeds  # (B, projection_dim), not normalised
    """

    model_kind = "vision_with_projection"


class CLIPModel(CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature (an nn.Module).

    Args:
        config: a CLIPConfig (or its dict, or a transformers CLIPConfig).
        gradient_checkpointing: recompute each layer's activations in the backward pass.
        attn_implementation: "sdpa" (default) or "eager".

    Example:
        >>> model = CLIPModel.from_pretrained("path/to/clip")  # eval mode, float32
        >>> with torch.no_grad():
        ...     out = model(**processor(text=texts, images=images, return_tensors="pt", padding=True))
        >>> probs = out.logits_per_image.softmax(dim=-1)
    """

    model_kind = "clip"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        text_cfg, vision_cfg = cfg.text_config, cfg.vision_config
        self.text_model = CLIPTextTransformer(text_cfg, self.attn_implementation)
        self.vision_model = CLIPVisionTransformer(vision_cfg, self.attn_implementation)
        self.visual_projection = nn.Linear(vision_cfg.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(text_cfg.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init_value)))
        self.post_init()

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """``text_projection`` of the pooled text state: a (B, projection_dim) tensor, not normalised."""
        inputs = self._text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        return self.text_projection(self.text_model(*inputs).pooler_output)

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        """``visual_projection`` of the pooled image state: a (B, projection_dim) tensor, not normalised."""
        pixels = self._pixel_inputs(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(pixels, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        return self.visual_projection(vision.pooler_output)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        inputs, pixels = clip_inputs(
            self, input_ids, pixel_values, attention_mask, position_ids, interpolate_pos_encoding, return_loss
        )
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        vision = self.vision_model(pixels, **flags, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        text = self.text_model(*inputs, **flags)
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        scale = self.logit_scale.exp().to(text_embeds.dtype)
        logits_per_text = torch.matmul(text_embeds, image_embeds.t()) * scale
        loss = clip_loss(logits_per_text) if return_loss else None
        output = clip_output(text, vision, text_embeds, image_embeds, logits_per_text, torch.t, loss)
        return as_requested(output, self.config, return_dict)


__all__ = [
    "CLIPModel",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
