"""CLIP on Flax Linen: FlaxCLIPModel, FlaxCLIPTextModel(WithProjection), FlaxCLIPVisionModel(WithProjection).

The building blocks mirror clip_tf/modeling.py in the same order and with the same names:
activations, embeddings, attention, MLP, encoder layer, encoder, text transformer, vision
transformer, public classes. Every submodule is named after its canonical (transformers PyTorch)
module, so the params tree is exactly ``clip_core.weights.to_flax_params`` of the canonical state
(and transformers' flax_model.msgpack): ``text_model/encoder/layers/0/self_attn/q_proj/kernel``.

Two layers of API, as in transformers: Linen modules (``FlaxCLIPModule`` ...) for users who manage
params themselves (``module.apply({"params": params}, ...)``), and thin wrappers
(``FlaxCLIPModel`` ...) that hold ``params`` and load/save checkpoints. Everything is
jit-compatible: shapes are checked in Python (they are static under tracing), id values only when
the ids are concrete.

``dtype`` is the compute dtype (e.g. bfloat16), ``param_dtype`` the dtype the params are kept in.
Softmax, the final L2 normalisation, the logits and the loss run in float32 whatever ``dtype`` is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from clip_core import outputs as _outputs
from clip_core import validation
from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_core.interpolation import bicubic_resize_matrix
from clip_core.outputs import (
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
)
from clip_core.pretrained import load_pretrained, save_pretrained
from clip_core.weights import from_flax_params, to_flax_params

# ---------------------------------------------------------------------------------------------
# Output containers as pytrees, so that jax.jit (and grad, vmap...) can return them


def _register_output_pytrees() -> None:
    for cls in (
        _outputs.BaseModelOutput,
        BaseModelOutputWithPooling,
        CLIPTextModelOutput,
        CLIPVisionModelOutput,
        CLIPOutput,
    ):
        names = tuple(f.name for f in dataclasses.fields(cls))
        try:
            jax.tree_util.register_pytree_with_keys(
                cls,
                lambda o, names=names: (
                    tuple((jax.tree_util.GetAttrKey(n), getattr(o, n)) for n in names),
                    None,
                ),
                lambda _, children, cls=cls: cls(*children),
            )
        except ValueError:  # already registered (e.g. by another module of this process)
            pass


_register_output_pytrees()

# ---------------------------------------------------------------------------------------------
# Activations


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def gelu_fast(x):
    # transformers' "gelu_fast": the tanh approximation written with a rounded sqrt(2/pi).
    return 0.5 * x * (1.0 + jnp.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "relu": jax.nn.relu,
}


# ---------------------------------------------------------------------------------------------
# Layer helpers (initialisers as transformers' PyTorch _init_weights)


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


def _dense(module: nn.Module, units: int, std: float, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        units,
        use_bias=use_bias,
        kernel_init=_normal(std),
        dtype=module.dtype,
        param_dtype=module.param_dtype,
    )


def _layer_norm(module: nn.Module) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=module.config.layer_norm_eps, dtype=module.dtype, param_dtype=module.param_dtype
    )


def _embed(module: nn.Module, num: int, features: int, std: float) -> nn.Embed:
    return nn.Embed(
        num, features, embedding_init=_normal(std), dtype=module.dtype, param_dtype=module.param_dtype
    )


# ---------------------------------------------------------------------------------------------
# Embeddings


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        std = cfg.initializer_range * cfg.initializer_factor
        self.token_embedding = _embed(self, cfg.vocab_size, cfg.hidden_size, std)
        self.position_embedding = _embed(self, cfg.max_position_embeddings, cfg.hidden_size, std)

    def __call__(self, input_ids, position_ids=None):
        if position_ids is None:
            position_ids = jnp.arange(input_ids.shape[-1])[None, :]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPVisionEmbeddings(nn.Module):
    """Patches (a strided conv) + class token + position embeddings, from channels-first pixels."""

    config: CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        std = cfg.initializer_range * cfg.initializer_factor
        self.class_embedding = self.param(
            "class_embedding",
            _normal(cfg.hidden_size**-0.5 * cfg.initializer_factor),
            (cfg.hidden_size,),
            self.param_dtype,
        )
        self.patch_embedding = nn.Conv(
            cfg.hidden_size,
            kernel_size=(cfg.patch_size, cfg.patch_size),
            strides=(cfg.patch_size, cfg.patch_size),
            padding="VALID",
            use_bias=False,
            kernel_init=_normal(std),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.position_embedding = _embed(self, cfg.num_patches + 1, cfg.hidden_size, std)

    def __call__(self, pixel_values, interpolate_pos_encoding=False):
        # Channels-first in (like transformers); XLA's convolutions want channels-last.
        pixels = jnp.transpose(pixel_values.astype(self.dtype), (0, 2, 3, 1))
        patches = self.patch_embedding(pixels)  # [batch, grid_h, grid_w, hidden]
        batch, grid_h, grid_w, hidden = patches.shape
        patches = patches.reshape(batch, grid_h * grid_w, hidden)
        class_token = jnp.broadcast_to(self.class_embedding.astype(self.dtype), (batch, 1, hidden))
        positions = self.position_embedding(jnp.arange(self.config.num_patches + 1))
        if interpolate_pos_encoding:
            positions = self.resized_positions(positions, grid_h, grid_w)
        return jnp.concatenate([class_token, patches], axis=1) + positions[None]

    def resized_positions(self, positions, grid_h: int, grid_w: int):
        """Position embeddings for a grid_h x grid_w patch grid: the trained grid, resized bicubically."""
        side = math.isqrt(self.config.num_patches)
        if (grid_h, grid_w) == (side, side):
            return positions
        rows = jnp.asarray(bicubic_resize_matrix(side, grid_h), positions.dtype)
        cols = jnp.asarray(bicubic_resize_matrix(side, grid_w), positions.dtype)
        grid = positions[1:].reshape(side, side, -1)
        resized = jnp.einsum("oi,ijd,pj->opd", rows, grid, cols, precision=jax.lax.Precision.HIGHEST)
        return jnp.concatenate([positions[:1], resized.reshape(grid_h * grid_w, -1)], axis=0)


# ---------------------------------------------------------------------------------------------
# Attention, MLP, encoder layer, encoder


class CLIPAttention(nn.Module):
    """Multi-head self-attention; ``attention_bias`` (float32) is added to the scores (0 or a large negative)."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        in_std = cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * cfg.initializer_factor
        out_std = cfg.hidden_size**-0.5 * cfg.initializer_factor
        self.k_proj = _dense(self, cfg.hidden_size, in_std)
        self.v_proj = _dense(self, cfg.hidden_size, in_std)
        self.q_proj = _dense(self, cfg.hidden_size, in_std)
        self.out_proj = _dense(self, cfg.hidden_size, out_std)
        self.dropout = nn.Dropout(rate=cfg.attention_dropout)

    def _split_heads(self, x):
        # [batch, seq, hidden] -> [batch, seq, heads, head_dim]
        return x.reshape(*x.shape[:2], self.config.num_attention_heads, self.config.head_dim)

    def __call__(self, hidden_states, attention_bias=None, deterministic=True, output_attentions=False):
        # Scaling the query (seq x head_dim) costs less than scaling the scores (seq x seq).
        query = self._split_heads(
            self.q_proj(hidden_states) * jnp.asarray(self.config.head_dim**-0.5, self.dtype)
        )
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key)
        # Softmax in float32 even when computing in bf16/fp16 (as transformers does).
        scores = scores.astype(jnp.float32)
        if attention_bias is not None:
            scores = scores + attention_bias
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs_used = self.dropout(probs, deterministic=deterministic or self.config.attention_dropout == 0)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs_used, value)
        context = context.reshape(*context.shape[:2], self.config.hidden_size)
        return self.out_proj(context), (probs if output_attentions else None)


class CLIPMLP(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        factor = cfg.initializer_factor
        self.activation = ACTIVATIONS[cfg.hidden_act]
        self.fc1 = _dense(self, cfg.intermediate_size, (2 * cfg.hidden_size) ** -0.5 * factor)
        self.fc2 = _dense(
            self, cfg.hidden_size, cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * factor
        )

    def __call__(self, hidden_states):
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.self_attn = CLIPAttention(self.config, **kwargs)
        self.layer_norm1 = _layer_norm(self)
        self.mlp = CLIPMLP(self.config, **kwargs)
        self.layer_norm2 = _layer_norm(self)

    def __call__(self, hidden_states, attention_bias=None, deterministic=True, output_attentions=False):
        attended, probs = self.self_attn(
            self.layer_norm1(hidden_states),
            attention_bias,
            deterministic=deterministic,
            output_attentions=output_attentions,
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, probs


# With remat, the layer's activations are recomputed in the backward pass: same params, less memory.
# static_argnums count self: (deterministic, output_attentions) are arguments 3 and 4.
RematCLIPEncoderLayer = nn.remat(CLIPEncoderLayer, static_argnums=(3, 4))


class CLIPEncoderLayers(nn.Module):
    """The layer stack, named "0", "1", ... (transformers' Flax tree: ``encoder/layers/<i>``)."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        layer_cls = RematCLIPEncoderLayer if self.remat else CLIPEncoderLayer
        self.layers = [
            layer_cls(self.config, dtype=self.dtype, param_dtype=self.param_dtype, name=str(i))
            for i in range(self.config.num_hidden_layers)
        ]

    def __call__(
        self,
        hidden_states,
        attention_bias=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
    ):
        """(last hidden state, all hidden states or None, attention maps or None)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            # Positional: nn.remat's static arguments cannot be keywords.
            hidden_states, probs = layer(hidden_states, attention_bias, deterministic, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


class CLIPEncoder(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        self.layers = CLIPEncoderLayers(
            self.config, dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat
        )

    def __call__(
        self,
        hidden_states,
        attention_bias=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
    ):
        return self.layers(
            hidden_states,
            attention_bias=attention_bias,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )


# ---------------------------------------------------------------------------------------------
# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype=jnp.float32):
    """Causal mask plus padding mask, as an additive [batch or 1, 1, seq, seq] bias.

    Masked scores get the dtype's most negative value, like transformers' PyTorch model (a key
    masked both ways gets -inf, a row whose every visible key is padding attends uniformly to them).
    """
    most_negative = jnp.finfo(dtype).min
    visible = jnp.tril(jnp.ones((seq_len, seq_len), bool))
    bias = jnp.where(visible, jnp.zeros((), dtype), jnp.asarray(most_negative, dtype))[None, None]
    if attention_mask is not None:
        padding = (1.0 - attention_mask.astype(dtype))[:, None, None, :] * most_negative
        bias = bias + padding
    return bias


def first_index_where(condition):
    """Index of the first True per row ([batch, seq] -> [batch]); 0 for a row with none (as torch's argmax)."""
    return jnp.argmax(condition, axis=-1)


class CLIPTextTransformer(nn.Module):
    config: CLIPTextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embeddings = CLIPTextEmbeddings(self.config, **kwargs)
        self.encoder = CLIPEncoder(self.config, remat=self.remat, **kwargs)
        self.final_layer_norm = _layer_norm(self)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
    ):
        hidden_states = self.embeddings(input_ids, position_ids=position_ids)
        bias = text_attention_bias(input_ids.shape[-1], attention_mask)
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            attention_bias=bias,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        last = self.final_layer_norm(last)
        pooled = jnp.take_along_axis(last, self.pooling_positions(input_ids)[:, None, None], axis=1)[:, 0]
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )

    def pooling_positions(self, input_ids):
        """Where each text is pooled: its first eos token, or argmax(input_ids) for legacy configs."""
        if self.config.uses_legacy_eos_pooling:
            # OpenAI's rule: the end-of-text token has the largest id.
            is_target = input_ids == jnp.max(input_ids, axis=-1, keepdims=True)
        else:
            is_target = input_ids == self.config.eos_token_id
        return first_index_where(is_target)


class CLIPVisionTransformer(nn.Module):
    config: CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embeddings = CLIPVisionEmbeddings(self.config, **kwargs)
        self.pre_layrnorm = _layer_norm(self)  # sic: the canonical name
        self.encoder = CLIPEncoder(self.config, remat=self.remat, **kwargs)
        self.post_layernorm = _layer_norm(self)

    def __call__(
        self,
        pixel_values,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
    ):
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = self.pre_layrnorm(hidden_states)
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            deterministic=deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = self.post_layernorm(last[:, 0, :])
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )


# ---------------------------------------------------------------------------------------------
# Input checks (clip_core.validation) on what JAX knows while tracing: shapes always, ids when concrete


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_text_inputs(config, input_ids, attention_mask=None, position_ids=None):
    validation.require_inputs(input_ids=input_ids)
    shape = tuple(np.shape(input_ids))
    id_range = None
    if _is_concrete(input_ids) and len(shape) == 2 and np.size(input_ids):
        ids = np.asarray(input_ids)
        id_range = (int(ids.min()), int(ids.max()))
    validation.check_input_ids(shape, config, id_range)
    validation.check_attention_mask(
        None if attention_mask is None else tuple(np.shape(attention_mask)), shape
    )
    validation.check_position_ids(None if position_ids is None else tuple(np.shape(position_ids)), shape)


def _check_pixel_values(config, pixel_values, interpolate_pos_encoding):
    validation.require_inputs(pixel_values=pixel_values)
    validation.check_pixel_values(tuple(np.shape(pixel_values)), config, bool(interpolate_pos_encoding))


def contrastive_loss(logits):
    """Mean cross-entropy of each row against the diagonal (float32)."""
    logits = jnp.asarray(logits, jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.diagonal(log_probs))


def clip_loss(logits_per_text):
    """Symmetric CLIP loss: the mean of the text->image and image->text cross-entropies, in float32."""
    logits = jnp.asarray(logits_per_text, jnp.float32)
    return (contrastive_loss(logits) + contrastive_loss(logits.T)) / 2.0


def _l2_normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Linen modules of the public classes


class FlaxCLIPTextModule(nn.Module):
    config: CLIPTextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        self.text_model = CLIPTextTransformer(
            self.config, dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat
        )

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
    ):
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        output = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            deterministic=deterministic,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        return _finish(output, return_dict)


class FlaxCLIPTextModelWithProjectionModule(nn.Module):
    """Text tower + text_projection (no normalisation): text_embeds as CLIPModel projects them."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        cfg = self.config
        self.text_model = CLIPTextTransformer(
            cfg, dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat
        )
        self.text_projection = _dense(
            self, cfg.projection_dim, cfg.hidden_size**-0.5 * cfg.initializer_factor, use_bias=False
        )

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
    ):
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        text = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            deterministic=deterministic,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        output = CLIPTextModelOutput(
            text_embeds=self.text_projection(text.pooler_output),
            last_hidden_state=text.last_hidden_state,
            hidden_states=text.hidden_states,
            attentions=text.attentions,
        )
        return _finish(output, return_dict)


class FlaxCLIPVisionModule(nn.Module):
    config: CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        self.vision_model = CLIPVisionTransformer(
            self.config, dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat
        )

    def __call__(
        self,
        pixel_values,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        interpolate_pos_encoding=False,
    ):
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        output = self.vision_model(
            pixel_values,
            deterministic=deterministic,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
        )
        return _finish(output, return_dict)


class FlaxCLIPVisionModelWithProjectionModule(nn.Module):
    """Vision tower + visual_projection (no normalisation)."""

    config: CLIPVisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        cfg = self.config
        self.vision_model = CLIPVisionTransformer(
            cfg, dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat
        )
        self.visual_projection = _dense(
            self, cfg.projection_dim, cfg.hidden_size**-0.5 * cfg.initializer_factor, use_bias=False
        )

    def __call__(
        self,
        pixel_values,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        interpolate_pos_encoding=False,
    ):
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixel_values,
            deterministic=deterministic,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
        )
        output = CLIPVisionModelOutput(
            image_embeds=self.visual_projection(vision.pooler_output),
            last_hidden_state=vision.last_hidden_state,
            hidden_states=vision.hidden_states,
            attentions=vision.attentions,
        )
        return _finish(output, return_dict)


class FlaxCLIPModule(nn.Module):
    """Both towers, their projections and the learned temperature."""

    config: CLIPConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        cfg = self.config
        factor = cfg.initializer_factor
        text_cfg, vision_cfg = cfg.text_config, cfg.vision_config
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat)
        self.text_model = CLIPTextTransformer(text_cfg, **kwargs)
        self.vision_model = CLIPVisionTransformer(vision_cfg, **kwargs)
        self.visual_projection = _dense(
            self, cfg.projection_dim, vision_cfg.hidden_size**-0.5 * factor, use_bias=False
        )
        self.text_projection = _dense(
            self, cfg.projection_dim, text_cfg.hidden_size**-0.5 * factor, use_bias=False
        )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(cfg.logit_scale_init_value), (), self.param_dtype
        )

    # -- features --------------------------------------------------------------------------

    def get_text_features(self, input_ids, attention_mask=None, position_ids=None, deterministic=True):
        """Projected (not normalised) text embeddings [batch, projection_dim]."""
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        text = self.text_model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, deterministic=deterministic
        )
        return self.text_projection(text.pooler_output)

    def get_image_features(self, pixel_values, deterministic=True, interpolate_pos_encoding=False):
        """Projected (not normalised) image embeddings [batch, projection_dim]."""
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixel_values, deterministic=deterministic, interpolate_pos_encoding=bool(interpolate_pos_encoding)
        )
        return self.visual_projection(vision.pooler_output)

    # -- forward ---------------------------------------------------------------------------

    def __call__(
        self,
        input_ids,
        pixel_values,
        attention_mask=None,
        position_ids=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        interpolate_pos_encoding=False,
        return_loss=False,
    ):
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        if return_loss:
            validation.check_loss_batches(np.shape(input_ids)[0], np.shape(pixel_values)[0])

        flags = dict(
            deterministic=deterministic,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        vision = self.vision_model(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), **flags
        )
        text = self.text_model(input_ids, attention_mask=attention_mask, position_ids=position_ids, **flags)

        # Normalisation and logits in float32 whatever the compute dtype (stable logits and loss).
        image_embeds = _l2_normalize(self.visual_projection(vision.pooler_output).astype(jnp.float32))
        text_embeds = _l2_normalize(self.text_projection(text.pooler_output).astype(jnp.float32))
        scale = jnp.exp(self.logit_scale.astype(jnp.float32))
        logits_per_text = (text_embeds @ image_embeds.T) * scale
        logits_per_image = logits_per_text.T

        output = CLIPOutput(
            loss=clip_loss(logits_per_text) if return_loss else None,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text,
            vision_model_output=vision,
        )
        return _finish(output, return_dict)


def _finish(output, return_dict):
    return output if return_dict is None or return_dict else output.to_tuple()


# ---------------------------------------------------------------------------------------------
# Public classes: a Linen module plus the params it runs with


class _CLIPPreTrainedModel:
    """Holds ``config``, ``module`` and ``params`` (a plain nested dict, no "params" wrapper).

    ``params`` is keyed like ``clip_core.weights.to_flax_params``; from_pretrained / save_pretrained
    go through canonical numpy state (clip_core.pretrained).
    """

    config_class: type = CLIPConfig
    module_class: type = FlaxCLIPModule
    model_kind = "clip"

    def __init__(
        self,
        config,
        input_shape=None,
        seed: int = 0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        _do_init: bool = True,
        remat: bool = False,
    ):
        if isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.remat = remat
        self.module = self.module_class(config, dtype=dtype, param_dtype=param_dtype, remat=remat)
        self.input_shape = input_shape if input_shape is not None else self._default_input_shape()
        self._params = None
        if _do_init:
            self._params = self.init_weights(jax.random.PRNGKey(seed), self.input_shape)

    # -- params ----------------------------------------------------------------------------

    @property
    def params(self) -> dict:
        if self._params is None:
            raise ValueError(
                "this model was built with _do_init=False: set model.params or call init_weights"
            )
        return self._params

    @params.setter
    def params(self, params) -> None:
        params = unfreeze(params)
        if set(params) == {"params"}:
            params = params["params"]
        self._params = params

    def _resolve_params(self, params):
        if params is None:
            return self.params
        params = unfreeze(params)
        return params["params"] if set(params) == {"params"} else params

    def _dummy_inputs(self, rng, input_shape) -> tuple:
        raise NotImplementedError

    def init_weights(self, rng, input_shape=None) -> dict:
        """Fresh random params (transformers' PyTorch initialisation scales) for inputs of input_shape."""
        input_shape = input_shape if input_shape is not None else self._default_input_shape()
        params_rng, dropout_rng = jax.random.split(rng)
        inputs = self._dummy_inputs(params_rng, input_shape)
        # One XLA program: compiling it costs about half of running init op by op.
        variables = jax.jit(self.module.init)({"params": params_rng, "dropout": dropout_rng}, *inputs)
        return unfreeze(variables)["params"]

    # -- checkpoints -----------------------------------------------------------------------

    def canonical_state(self, params=None) -> dict[str, np.ndarray]:
        """The params as canonical (transformers PyTorch layout) numpy arrays."""
        return from_flax_params(jax.device_get(self._resolve_params(params)))

    def load_canonical_state(self, state) -> None:
        """Set params from canonical numpy arrays (checked by name and shape), cast to param_dtype."""
        from clip_core.weights import select_for_model

        state = select_for_model(state, self.config, self.model_kind)
        tree = to_flax_params(state)
        self._params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.param_dtype), tree)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        config=None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: bool = False,
        **kwargs,
    ):
        """A model with the weights of a checkpoint folder (config.json + model.safetensors, or
        pytorch_model.bin, tf_model.h5, flax_model.msgpack)."""
        config, state = load_pretrained(pretrained_model_name_or_path, cls.model_kind, config)
        model = cls(config, dtype=dtype, param_dtype=param_dtype, _do_init=False, remat=remat, **kwargs)
        model.load_canonical_state(state)
        return model

    def save_pretrained(self, save_directory, params=None, formats=("safetensors",)) -> list[str]:
        """Write config.json and model.safetensors (canonical names); formats may add "flax"
        (flax_model.msgpack, as transformers' Flax classes read it), "pytorch" or "tf"."""
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        return save_pretrained(
            save_directory,
            self.config,
            self.canonical_state(params),
            formats=formats,
            model_kind=self.model_kind,
        )

    # -- running ---------------------------------------------------------------------------

    def _apply(self, params, dropout_rng, train, *args, method=None, **kwargs):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self.module.apply(
            {"params": self._resolve_params(params)},
            *args,
            deterministic=not train,
            rngs=rngs,
            method=method,
            **kwargs,
        )


def _ids(x):
    return None if x is None else jnp.asarray(x, jnp.int32)


def _pixels(x):
    return None if x is None else jnp.asarray(x, jnp.float32)


class _TextPreTrainedModel(_CLIPPreTrainedModel):
    config_class = CLIPTextConfig

    def _default_input_shape(self):
        return (1, 1)

    def _dummy_inputs(self, rng, input_shape):
        ids = jnp.zeros(input_shape, jnp.int32)
        return ids, jnp.ones_like(ids)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        validation.require_inputs(input_ids=input_ids)
        return self._apply(
            params,
            dropout_rng,
            train,
            _ids(input_ids),
            _ids(attention_mask),
            _ids(position_ids),
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            return_dict=return_dict is None or return_dict,
        )


class _VisionPreTrainedModel(_CLIPPreTrainedModel):
    config_class = CLIPVisionConfig

    def _default_input_shape(self):
        size = self.config.image_size
        return (1, self.config.num_channels, size, size)

    def _dummy_inputs(self, rng, input_shape):
        return (jax.random.normal(rng, input_shape),)

    def __call__(
        self,
        pixel_values=None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        interpolate_pos_encoding=False,
    ):
        validation.require_inputs(pixel_values=pixel_values)
        return self._apply(
            params,
            dropout_rng,
            train,
            _pixels(pixel_values),
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            return_dict=return_dict is None or return_dict,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
        )


class FlaxCLIPTextModel(_TextPreTrainedModel):
    module_class = FlaxCLIPTextModule
    model_kind = "text"


class FlaxCLIPTextModelWithProjection(_TextPreTrainedModel):
    module_class = FlaxCLIPTextModelWithProjectionModule
    model_kind = "text_with_projection"


class FlaxCLIPVisionModel(_VisionPreTrainedModel):
    module_class = FlaxCLIPVisionModule
    model_kind = "vision"


class FlaxCLIPVisionModelWithProjection(_VisionPreTrainedModel):
    module_class = FlaxCLIPVisionModelWithProjectionModule
    model_kind = "vision_with_projection"


class FlaxCLIPModel(_CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature.

    ``input_shape`` is ((batch, seq), (batch, channels, height, width)) (pixels channels-first).
    """

    config_class = CLIPConfig
    module_class = FlaxCLIPModule
    model_kind = "clip"

    def _default_input_shape(self):
        vision = self.config.vision_config
        return ((1, 1), (1, vision.num_channels, vision.image_size, vision.image_size))

    def _dummy_inputs(self, rng, input_shape):
        ids = jnp.zeros(input_shape[0], jnp.int32)
        return ids, jax.random.normal(rng, input_shape[1]), jnp.ones_like(ids)

    def __call__(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        return_loss=False,
        interpolate_pos_encoding=False,
    ):
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        return self._apply(
            params,
            dropout_rng,
            train,
            _ids(input_ids),
            _pixels(pixel_values),
            _ids(attention_mask),
            _ids(position_ids),
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            return_dict=return_dict is None or return_dict,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            return_loss=bool(return_loss),
        )

    def get_text_features(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        params=None,
        dropout_rng=None,
        train=False,
    ):
        """Projected (not normalised) text embeddings [batch, projection_dim]."""
        validation.require_inputs(input_ids=input_ids)
        return self._apply(
            params,
            dropout_rng,
            train,
            _ids(input_ids),
            _ids(attention_mask),
            _ids(position_ids),
            method=FlaxCLIPModule.get_text_features,
        )

    def get_image_features(
        self,
        pixel_values=None,
        params=None,
        dropout_rng=None,
        train=False,
        interpolate_pos_encoding=False,
    ):
        """Projected (not normalised) image embeddings [batch, projection_dim]."""
        validation.require_inputs(pixel_values=pixel_values)
        return self._apply(
            params,
            dropout_rng,
            train,
            _pixels(pixel_values),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            method=FlaxCLIPModule.get_image_features,
        )


__all__ = [
    "FlaxCLIPModel",
    "FlaxCLIPModule",
    "FlaxCLIPTextModel",
    "FlaxCLIPTextModelWithProjection",
    "FlaxCLIPTextModelWithProjectionModule",
    "FlaxCLIPTextModule",
    "FlaxCLIPVisionModel",
    "FlaxCLIPVisionModelWithProjection",
    "FlaxCLIPVisionModelWithProjectionModule",
    "FlaxCLIPVisionModule",
    "clip_loss",
    "contrastive_loss",
]
