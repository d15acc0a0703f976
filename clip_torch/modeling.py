"""CLIP on PyTorch: CLIPModel, CLIPTextModel(WithProjection), CLIPVisionModel(WithProjection).

The building blocks mirror clip_tf/modeling.py in the same order and with the same names:
activations, embeddings, attention, MLP, encoder layer, encoder, text transformer, vision
transformer, input checks, loss, public classes. Module attributes carry transformers' PyTorch
names, so ``state_dict()`` keys are the canonical names (``vision_model.pre_layrnorm.weight``, ...)
and a checkpoint loads with ``torch.from_numpy`` and no renaming. No ``position_ids`` buffers: the
positions are made on the fly, so the state dict holds parameters only.

Attention runs through ``F.scaled_dot_product_attention``; when attention maps are requested it
takes the explicit path (softmax in float32, like transformers). Gradient checkpointing is one
switch: ``CLIPModel(config, gradient_checkpointing=True)`` or ``model.gradient_checkpointing_enable()``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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

# ---------------------------------------------------------------------------------------------
# Activations


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def gelu_fast(x):
    # transformers' "gelu_fast": the tanh approximation written with a rounded sqrt(2/pi).
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "relu": F.relu,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


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
        patches = self.patch_embedding(pixel_values.to(weight.dtype))  # [batch, hidden, grid_h, grid_w]
        grid_h, grid_w = patches.shape[-2], patches.shape[-1]
        patches = patches.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)
        positions = self.position_embedding.weight
        if interpolate_pos_encoding:
            positions = self.resized_positions(positions, grid_h, grid_w)
        return torch.cat([class_token, patches], dim=1) + positions[None]

    def resized_positions(self, positions, grid_h, grid_w):
        """Position embeddings for a grid_h x grid_w patch grid: the trained grid, resized bicubically."""
        side = math.isqrt(self.config.num_patches)
        if (grid_h, grid_w) == (side, side):
            return positions
        rows, cols = _resize_matrices(side, int(grid_h), int(grid_w))
        rows, cols = rows.to(positions), cols.to(positions)
        grid = positions[1:].reshape(side, side, -1)
        resized = torch.einsum("oi,ijd,pj->opd", rows, grid, cols)
        return torch.cat([positions[:1], resized.reshape(grid_h * grid_w, -1)], dim=0)


@torch.compiler.disable
def _resize_matrices(side: int, grid_h: int, grid_w: int):
    return (
        torch.from_numpy(bicubic_resize_matrix(side, grid_h)),
        torch.from_numpy(bicubic_resize_matrix(side, grid_w)),
    )


# ---------------------------------------------------------------------------------------------
# Attention, MLP, encoder layer, encoder


class CLIPAttention(nn.Module):
    """Multi-head self-attention; ``attention_bias`` is added to the scores (0 or a large negative)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x):
        # [batch, seq, hidden] -> [batch, heads, seq, head_dim]
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states, attention_bias=None, output_attentions=False):
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        dropout = self.dropout if self.training else 0.0
        probs = None
        if output_attentions:
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.scale
            if attention_bias is not None:
                scores = scores + attention_bias
            # Softmax in float32 even in bf16/fp16 (as transformers does).
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
            context = torch.matmul(F.dropout(probs, p=dropout, training=self.training), value)
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_bias, dropout_p=dropout, scale=self.scale
            )
        context = context.transpose(1, 2).flatten(2)
        return self.out_proj(context), probs


class CLIPMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation = _activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_bias=None, output_attentions=False):
        attended, probs = self.self_attn(
            self.layer_norm1(hidden_states),
            attention_bias=attention_bias,
            output_attentions=output_attentions,
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, probs


class CLIPEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states, attention_bias=None, output_attentions=False, output_hidden_states=False
    ):
        """(last hidden state, all hidden states or None, attention maps or None)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                hidden_states, probs = checkpoint(
                    layer, hidden_states, attention_bias, output_attentions, use_reentrant=False
                )
            else:
                hidden_states, probs = layer(hidden_states, attention_bias, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


# ---------------------------------------------------------------------------------------------
# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype, device):
    """Causal mask plus padding mask, as an additive [batch or 1, 1, seq, seq] bias.

    Masked scores get the dtype's most negative value, like transformers' PyTorch model (a key
    masked both ways gets -inf, a row whose every visible key is padding attends uniformly to them).
    """
    most_negative = torch.finfo(dtype).min
    bias = torch.full((seq_len, seq_len), most_negative, dtype=dtype, device=device).triu(1)[None, None]
    if attention_mask is not None:
        padding = (1.0 - attention_mask.to(dtype))[:, None, None, :] * most_negative
        bias = bias + padding
    return bias


def first_index_where(condition):
    """Index of the first True per row ([batch, seq] -> [batch]); 0 for a row with none."""
    return condition.int().argmax(dim=-1)


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
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
        bias = text_attention_bias(
            input_ids.shape[-1], attention_mask, hidden_states.dtype, hidden_states.device
        )
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            attention_bias=bias,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        last = self.final_layer_norm(last)
        rows = torch.arange(last.shape[0], device=last.device)
        pooled = last[rows, self.pooling_positions(input_ids)]
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )

    def pooling_positions(self, input_ids):
        """Where each text is pooled: its first eos token, or argmax(input_ids) for legacy configs."""
        if self.config.uses_legacy_eos_pooling:
            # OpenAI's rule: the end-of-text token has the largest id.
            is_target = input_ids == input_ids.amax(dim=-1, keepdim=True)
        else:
            is_target = input_ids == self.config.eos_token_id
        return first_index_where(is_target)


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic: canonical name
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        pixel_values,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
    ):
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = self.pre_layrnorm(hidden_states)
        last, all_hidden, attentions = self.encoder(
            hidden_states, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        pooled = self.post_layernorm(last[:, 0, :])
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )


# ---------------------------------------------------------------------------------------------
# Input checks (clip_core.validation)


def _to_tensor(x, device):
    """None, or a tensor on ``device`` from a tensor, numpy array or nested list."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x if x.device == device else x.to(device)
    return torch.as_tensor(np.asarray(x), device=device)


def _check_text_inputs(config, input_ids, attention_mask, position_ids):
    validation.require_inputs(input_ids=input_ids)
    shape = tuple(input_ids.shape)
    id_range = None
    # Value checks read the ids (a host sync); skipped while torch.compile traces.
    if not torch.compiler.is_compiling() and input_ids.numel() and input_ids.dim() == 2:
        if input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        low, high = torch.aminmax(input_ids)
        id_range = (int(low), int(high))
    validation.check_input_ids(shape, config, id_range)
    validation.check_attention_mask(None if attention_mask is None else tuple(attention_mask.shape), shape)
    validation.check_position_ids(None if position_ids is None else tuple(position_ids.shape), shape)


def _check_pixel_values(config, pixel_values, interpolate_pos_encoding):
    validation.require_inputs(pixel_values=pixel_values)
    validation.check_pixel_values(tuple(pixel_values.shape), config, interpolate_pos_encoding)


def contrastive_loss(logits):
    """Mean cross-entropy of each row against the diagonal."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def clip_loss(logits_per_text):
    """Symmetric CLIP loss: the mean of the text->image and image->text cross-entropies."""
    logits = logits_per_text.float()
    return (contrastive_loss(logits) + contrastive_loss(logits.t())) / 2.0


def _l2_normalize(x):
    return x / x.norm(p=2, dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Public classes

_CONFIG_CLASSES = {cls.model_type: cls for cls in (CLIPConfig, CLIPTextConfig, CLIPVisionConfig)}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as_config(config, expected):
    """A config object from itself or from its to_dict()."""
    if isinstance(config, dict):
        config = _CONFIG_CLASSES.get(config.get("model_type"), expected).from_dict(config)
    if not isinstance(config, expected):
        raise TypeError(f"expected a {expected.__name__}, got {type(config).__name__}")
    return config


def _as_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return _DTYPES[name]


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """A canonical numpy array as a tensor (bfloat16 arrays from ml_dtypes too)."""
    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _finish(output, return_dict):
    return output if return_dict is None or return_dict else output.to_tuple()


def _normal_(tensor, std):
    nn.init.normal_(tensor, mean=0.0, std=std)


class CLIPPreTrainedModel(nn.Module):
    """from_pretrained / save_pretrained through canonical numpy state; weight init; checkpointing switch."""

    config_class = CLIPConfig
    model_kind = "clip"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__()
        self.config = _as_config(config, self.config_class)
        self._gradient_checkpointing = gradient_checkpointing

    def post_init(self):
        """Initialise the weights as transformers does, then apply the checkpointing switch."""
        if not any(p.is_meta for p in self.parameters()):
            with torch.no_grad():
                self.apply(self._init_weights)
        self.gradient_checkpointing = self._gradient_checkpointing

    def _init_weights(self, module):
        factor = self.config.initializer_factor
        if isinstance(module, CLIPTextEmbeddings):
            _normal_(module.token_embedding.weight, factor * 0.02)
            _normal_(module.position_embedding.weight, factor * 0.02)
        elif isinstance(module, CLIPVisionEmbeddings):
            cfg = module.config
            _normal_(module.class_embedding, cfg.hidden_size**-0.5 * factor)
            _normal_(module.patch_embedding.weight, cfg.initializer_range * factor)
            _normal_(module.position_embedding.weight, cfg.initializer_range * factor)
        elif isinstance(module, CLIPAttention):
            cfg = module.config
            in_std = cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * factor
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                _normal_(proj.weight, in_std)
            _normal_(module.out_proj.weight, cfg.hidden_size**-0.5 * factor)
        elif isinstance(module, CLIPMLP):
            cfg = module.config
            _normal_(module.fc1.weight, (2 * cfg.hidden_size) ** -0.5 * factor)
            _normal_(module.fc2.weight, cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * factor)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear):
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            if module is getattr(self, "text_projection", None) or module is getattr(
                self, "visual_projection", None
            ):
                _normal_(module.weight, module.in_features**-0.5 * factor)

    # -- gradient checkpointing: one switch for every encoder -----------------------------------

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self._gradient_checkpointing = bool(value)
        for module in self.modules():
            if isinstance(module, CLIPEncoder):
                module.gradient_checkpointing = bool(value)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        self.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- weights by canonical name ---------------------------------------------------------

    def canonical_state(self) -> dict[str, np.ndarray]:
        """The parameters as canonical numpy arrays (the state_dict keys are the canonical names)."""
        return {name: _to_numpy(tensor) for name, tensor in self.state_dict().items()}

    def load_canonical_state(self, state, dtype=None) -> None:
        """Take canonical numpy arrays (all of them, checked by name and shape) as the parameters."""
        dtype = _as_dtype(dtype) or self.dtype
        tensors = {name: _to_torch(array).to(dtype) for name, array in state.items()}
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"state does not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}"
            )
        for name, param in own.items():
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise ValueError(
                    f"{name}: got shape {tuple(tensors[name].shape)}, the model has {tuple(param.shape)}"
                )
        assign = any(p.is_meta for p in own.values())
        if not assign:
            tensors = {name: t.to(own[name].device) for name, t in tensors.items()}
        self.load_state_dict(tensors, strict=True, assign=assign)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, config=None, dtype=None, **kwargs):
        """A model with the weights of a checkpoint folder (config.json + model.safetensors, ...).

        ``dtype`` (torch.float32 / bfloat16 / float16 or their names) sets the parameters' dtype;
        the default is float32. Other keyword arguments (``gradient_checkpointing``) go to the class.
        """
        dtype = _as_dtype(dtype) or torch.float32
        config, state = load_pretrained(pretrained_model_name_or_path, cls.model_kind, config)
        with torch.device("meta"):  # no random init: every parameter comes from the checkpoint
            model = cls(config, **kwargs)
        model.load_canonical_state(state, dtype=dtype)
        return model.eval()

    def save_pretrained(self, save_directory, formats=("safetensors",)) -> list[str]:
        """Write config.json and model.safetensors (canonical names); formats may add "pytorch", "tf", "flax"."""
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        return save_pretrained(
            save_directory, self.config, self.canonical_state(), formats=formats, model_kind=self.model_kind
        )


class CLIPTextModel(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
    model_kind = "text"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing)
        self.text_model = CLIPTextTransformer(self.config)
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
        device = self.device
        input_ids, attention_mask, position_ids = (
            _to_tensor(x, device) for x in (input_ids, attention_mask, position_ids)
        )
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        output = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        return _finish(output, return_dict)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    """Text tower + text_projection (no normalisation): text_embeds as CLIPModel projects them."""

    config_class = CLIPTextConfig
    model_kind = "text_with_projection"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing)
        cfg = self.config
        self.text_model = CLIPTextTransformer(cfg)
        self.text_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)
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
        device = self.device
        input_ids, attention_mask, position_ids = (
            _to_tensor(x, device) for x in (input_ids, attention_mask, position_ids)
        )
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        text = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
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


class CLIPVisionModel(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    model_kind = "vision"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing)
        self.vision_model = CLIPVisionTransformer(self.config)
        self.post_init()

    def forward(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        pixel_values = _to_tensor(pixel_values, self.device)
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        output = self.vision_model(
            pixel_values,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
        )
        return _finish(output, return_dict)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    """Vision tower + visual_projection (no normalisation)."""

    config_class = CLIPVisionConfig
    model_kind = "vision_with_projection"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing)
        cfg = self.config
        self.vision_model = CLIPVisionTransformer(cfg)
        self.visual_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)
        self.post_init()

    def forward(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        pixel_values = _to_tensor(pixel_values, self.device)
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixel_values,
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


class CLIPModel(CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature."""

    config_class = CLIPConfig
    model_kind = "clip"

    def __init__(self, config, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing)
        cfg = self.config
        text_cfg, vision_cfg = cfg.text_config, cfg.vision_config
        self.text_model = CLIPTextTransformer(text_cfg)
        self.vision_model = CLIPVisionTransformer(vision_cfg)
        self.visual_projection = nn.Linear(vision_cfg.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(text_cfg.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init_value)))
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            self.logit_scale.fill_(self.config.logit_scale_init_value)

    # -- features --------------------------------------------------------------------------

    def get_text_features(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Projected (not normalised) text embeddings [batch, projection_dim]."""
        device = self.device
        input_ids, attention_mask, position_ids = (
            _to_tensor(x, device) for x in (input_ids, attention_mask, position_ids)
        )
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        text = self.text_model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self.text_projection(text.pooler_output)

    def get_image_features(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        """Projected (not normalised) image embeddings [batch, projection_dim]."""
        pixel_values = _to_tensor(pixel_values, self.device)
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        return self.visual_projection(vision.pooler_output)

    # -- forward ---------------------------------------------------------------------------

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
        device = self.device
        input_ids, pixel_values, attention_mask, position_ids = (
            _to_tensor(x, device) for x in (input_ids, pixel_values, attention_mask, position_ids)
        )
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        if return_loss:
            validation.check_loss_batches(input_ids.shape[0], pixel_values.shape[0])

        flags = {
            "output_attentions": bool(output_attentions),
            "output_hidden_states": bool(output_hidden_states),
        }
        vision = self.vision_model(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), **flags
        )
        text = self.text_model(input_ids, attention_mask=attention_mask, position_ids=position_ids, **flags)

        image_embeds = _l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = _l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = torch.matmul(text_embeds, image_embeds.t()) * self.logit_scale.exp().to(
            text_embeds.dtype
        )
        logits_per_image = logits_per_text.t()

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


__all__ = [
    "CLIPModel",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "clip_loss",
]
