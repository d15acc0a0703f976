"""CLIP on PyTorch: CLIPModel, CLIPTextModel(WithProjection), CLIPVisionModel(WithProjection).

The building blocks mirror clip_tf/modeling.py and clip_flax/modeling.py in the same order and with
the same names: embeddings, attention, MLP, encoder layer, encoder, text transformer, vision
transformer, loss, public classes. Module attributes carry transformers' PyTorch names, so
``state_dict()`` keys are the canonical names (``vision_model.pre_layrnorm.weight``, ...) and a
checkpoint loads with ``torch.from_numpy`` and no renaming. No ``position_ids`` buffers: positions
are made on the fly, so the state dict holds parameters only. What is not framework code (config
coercion, output options, input checks, init rules, from_pretrained / save_pretrained) lives in
clip_core.

Attention scales the queries, adds the mask in the compute dtype and takes the softmax in float32
(the same convention in all three backends). It runs through ``F.scaled_dot_product_attention``
unless attention maps are requested or ``attn_implementation="eager"``. Gradient checkpointing is
one switch: ``CLIPModel(config, gradient_checkpointing=True)`` or
``model.gradient_checkpointing_enable()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip_core import validation
from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_core.interpolation import position_grid_resize
from clip_core.modeling_utils import (
    activation,
    activations,
    as_requested,
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

# ---------------------------------------------------------------------------------------------
# Embeddings


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device)[None, :]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPVisionEmbeddings(nn.Module):
    """Patches (a strided conv) + class token + position embeddings, from channels-first pixels."""

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
        if interpolate_pos_encoding:
            positions = self.resized_positions(positions, grid_h, grid_w)
        return torch.cat([class_token, patches], dim=1) + positions[None]

    def resized_positions(self, positions, grid_h, grid_w):
        """Position embeddings for a grid_h x grid_w patch grid: the trained grid, resized bicubically."""
        resize = _grid_resize(self.config.num_patches, int(grid_h), int(grid_w))
        if resize is None:
            return positions
        rows, cols = (m.to(positions) for m in resize)  # (grid_h, side), (grid_w, side)
        side = rows.shape[1]
        grid = positions[1:].reshape(side, side, -1)
        resized = torch.einsum("oi,ijd,pj->opd", rows, grid, cols)
        return torch.cat([positions[:1], resized.reshape(grid_h * grid_w, -1)], dim=0)


@torch.compiler.disable
def _grid_resize(num_patches: int, grid_h: int, grid_w: int):
    resize = position_grid_resize(num_patches, grid_h, grid_w)
    return None if resize is None else tuple(torch.from_numpy(m) for m in resize)


# ---------------------------------------------------------------------------------------------
# Attention, MLP, encoder layer, encoder


class CLIPAttention(nn.Module):
    """Multi-head self-attention; ``attention_bias`` is added to the scores (0 or a large negative)."""

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
    def __init__(self, config, attn_implementation: str = "sdpa"):
        super().__init__()
        self.layers = nn.ModuleList(
            CLIPEncoderLayer(config, attn_implementation) for _ in range(config.num_hidden_layers)
        )
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states, attention_bias=None, output_attentions=False, output_hidden_states=False
    ):
        """(last hidden state, all hidden states or None, attention maps or None)."""
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()

        def call(layer, x):
            if recompute:  # activations recomputed in the backward pass
                return checkpoint(layer, x, attention_bias, output_attentions, use_reentrant=False)
            return layer(x, attention_bias, output_attentions)

        return run_layers(self.layers, hidden_states, call, output_attentions, output_hidden_states)


# ---------------------------------------------------------------------------------------------
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
    def __init__(self, config: CLIPTextConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config, attn_implementation)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
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
        """Where each text is pooled: its first eos token, or argmax(input_ids) for legacy configs."""
        if self.config.uses_legacy_eos_pooling:  # OpenAI's rule: end-of-text has the largest id
            return first_index_where(input_ids == input_ids.amax(dim=-1, keepdim=True))
        return first_index_where(input_ids == self.config.eos_token_id)


class CLIPVisionTransformer(nn.Module):
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


# ---------------------------------------------------------------------------------------------
# Loss


def contrastive_loss(logits):
    """Mean cross-entropy of each row against the diagonal."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def clip_loss(logits_per_text):
    """Symmetric CLIP loss: the mean of the text->image and image->text cross-entropies, in float32."""
    logits = logits_per_text.float()
    return (contrastive_loss(logits) + contrastive_loss(logits.t())) / 2.0


def l2_normalize(x):
    return x / x.norm(p=2, dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Public classes


class _TextTower(CLIPPreTrainedModel):
    """The text transformer, and with ``with_projection`` its projection (text_embeds, not normalised)."""

    config_class = CLIPTextConfig
    with_projection = False

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(self.config, self.attn_implementation)
        if self.with_projection:
            self.text_projection = nn.Linear(self.config.hidden_size, self.config.projection_dim, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
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
    """The vision transformer, and with ``with_projection`` its projection (image_embeds, not normalised)."""

    config_class = CLIPVisionConfig
    with_projection = False

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
        pixel_values=None,
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
    """The text tower: last_hidden_state and pooler_output (the end-of-text token's state)."""

    model_kind = "text"


class CLIPTextModelWithProjection(_TextTower):
    """The text tower + text_projection: text_embeds as CLIPModel projects them (not normalised)."""

    model_kind = "text_with_projection"
    with_projection = True


class CLIPVisionModel(_VisionTower):
    """The vision tower: last_hidden_state and pooler_output (the class token's state)."""

    model_kind = "vision"


class CLIPVisionModelWithProjection(_VisionTower):
    """The vision tower + visual_projection: image_embeds as CLIPModel projects them (not normalised)."""

    model_kind = "vision_with_projection"
    with_projection = True


class CLIPModel(CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature."""

    config_class = CLIPConfig
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
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Projected (not normalised) text embeddings (B, projection_dim)."""
        inputs = self._text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        return self.text_projection(self.text_model(*inputs).pooler_output)

    def get_image_features(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        """Projected (not normalised) image embeddings (B, projection_dim)."""
        pixels = self._pixel_inputs(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(pixels, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        return self.visual_projection(vision.pooler_output)

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        inputs = self._text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        pixels = self._pixel_inputs(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        if return_loss:
            validation.check_loss_batches(inputs[0].shape[0], pixels.shape[0])
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
