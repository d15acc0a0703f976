"""The PyTorch half of from_pretrained / save_pretrained, random init and input handling.

``CLIPPreTrainedModel`` is the base of the five public classes in clip_torch.modeling: parameters
by canonical name (the ``state_dict`` keys), random initialisation by clip_core's rules with
torch's generator, inputs turned into tensors on the model's device and checked by
clip_core.validation, and the gradient-checkpointing switch. The framework-free flow is
clip_core.pretrained.PretrainedModelMixin.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clip_core import validation
from clip_core.modeling_utils import as_config, check_attn_implementation, init_rule, is_embedding_table
from clip_core.pretrained import PretrainedModelMixin

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def _shape(x):
    return None if x is None else tuple(x.shape)


class CLIPPreTrainedModel(PretrainedModelMixin, nn.Module):
    """Weights by canonical name, random init as transformers', input handling, checkpointing switch."""

    def __init__(
        self, config, gradient_checkpointing: bool = False, attn_implementation: str | None = "sdpa"
    ):
        super().__init__()
        self.config = as_config(config, self.config_class)
        self.attn_implementation = check_attn_implementation(attn_implementation, default="sdpa")
        self._gradient_checkpointing = gradient_checkpointing
        self.warnings_issued: dict = {}  # transformers' Trainer records its one-off warnings here

    def post_init(self):
        """Initialise the weights as transformers does, then apply the checkpointing switch."""
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()
        self.gradient_checkpointing = self._gradient_checkpointing

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh random parameters drawn with torch's generator, by clip_core's init rules."""
        for name, param in self.named_parameters():
            rule, value = init_rule(name, self.config)
            if rule == "normal":
                nn.init.normal_(param, mean=0.0, std=value)
            else:
                nn.init.constant_(param, value)

    # -- inputs ---------------------------------------------------------------------------

    def _tensor(self, x):
        """None, or a tensor on the model's device from a tensor, numpy array or nested list."""
        if x is None or (isinstance(x, torch.Tensor) and x.device == self.device):
            return x
        return (
            x.to(self.device)
            if isinstance(x, torch.Tensor)
            else torch.as_tensor(np.asarray(x), device=self.device)
        )

    def _text_inputs(self, config, input_ids, attention_mask, position_ids):
        input_ids, attention_mask, position_ids = map(self._tensor, (input_ids, attention_mask, position_ids))
        id_range, integer = None, True
        # Value checks read the ids (a host sync); skipped while torch.compile traces.
        if input_ids is not None and input_ids.numel() and not torch.compiler.is_compiling():
            integer = not (input_ids.is_floating_point() or input_ids.is_complex())
            if integer:
                low, high = torch.aminmax(input_ids)
                id_range = (int(low), int(high))
        shapes = map(_shape, (input_ids, attention_mask, position_ids))
        validation.check_text_inputs(config, *shapes, id_range=id_range, integer_ids=integer)
        return input_ids, attention_mask, position_ids

    def _pixel_inputs(self, config, pixel_values, interpolate_pos_encoding):
        pixel_values = self._tensor(pixel_values)
        validation.check_pixel_values(_shape(pixel_values), config, interpolate_pos_encoding)
        return pixel_values

    # -- gradient checkpointing: one switch for every encoder -----------------------------------

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self._gradient_checkpointing = bool(value)
        for module in self.modules():
            if module is not self and hasattr(module, "gradient_checkpointing"):  # the encoders
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

    # -- weights by canonical name (the state_dict keys are the canonical names) ------------------

    def canonical_state(self) -> dict[str, np.ndarray]:
        return {name: _to_numpy(tensor) for name, tensor in self.state_dict().items()}

    def _assign_canonical_state(self, state) -> None:
        params = dict(self.named_parameters())
        on_meta = any(p.is_meta for p in params.values())
        tensors = {
            name: _to_torch(array).to(
                dtype=params[name].dtype, device=None if on_meta else params[name].device
            )
            for name, array in state.items()
        }
        self.load_state_dict(tensors, strict=True, assign=on_meta)

    @classmethod
    def _framework_dtype(cls, dtype) -> torch.dtype:
        return _as_dtype(dtype)

    @classmethod
    def _for_loading(cls, config, dtype=None, device_map=None, **kwargs):
        """``dtype`` (default float32) sets the parameters' dtype, ``device_map`` their device ("cpu",
        "cuda:0", a torch.device, an int, {"": device} or "auto": the first GPU, else the CPU); other
        keywords (gradient_checkpointing, attn_implementation) go to the class."""
        device = _device_of(device_map)
        with torch.device("meta"):  # no random init: every parameter comes from the checkpoint
            model = cls(config, **kwargs)
        model = model.to(dtype or torch.float32)
        model.config.dtype = model.dtype  # as transformers: the config records the loaded dtype
        model._load_device = device
        return model

    def _after_loading(self):
        device = self.__dict__.pop("_load_device", None)
        return (self if device is None else self.to(device)).eval()

    @classmethod
    def _from_config(cls, config, dtype=None, **kwargs):
        model = cls(config, **kwargs)
        return model if dtype is None else model.to(dtype)

    # -- transformers' PreTrainedModel API ----------------------------------------------------------

    framework = "pt"
    base_model_prefix = "clip"
    supports_gradient_checkpointing = True
    is_parallelizable = False

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count, as transformers counts it (``exclude_embeddings``: without nn.Embedding tables)."""
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if (p.requires_grad or not only_trainable)
            and not (exclude_embeddings and is_embedding_table(name))
        )

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and buffers), as transformers counts them."""
        tensors = list(self.parameters()) + (list(self.buffers()) if return_buffers else [])
        return sum(t.nelement() * t.element_size() for t in tensors)

    def _embedding_owner(self):
        tower = getattr(self, "text_model", None) or self.vision_model
        return tower.embeddings

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding (text models and CLIPModel; transformers' CLIPModel raises instead) or
        the patch embedding (vision models)."""
        embeddings = self._embedding_owner()
        return getattr(embeddings, "token_embedding", None) or embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        embeddings = self._embedding_owner()
        name = "token_embedding" if hasattr(embeddings, "token_embedding") else "patch_embedding"
        setattr(embeddings, name, value)

    def enable_input_require_grads(self) -> None:
        """Make the input embedding's output require grad, so gradient checkpointing works with frozen
        embeddings (adapters, as transformers' helper)."""

        def require_grad(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(require_grad)

    def disable_input_require_grads(self) -> None:
        self._require_grads_hook.remove()

    def get_output_embeddings(self):
        return None  # CLIP has no language-model head

    def tie_weights(self) -> None:
        """Nothing to tie: CLIP has no output embeddings (transformers' call is a no-op here too)."""

    @torch.no_grad()
    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None
    ):
        """Grow or shrink the token embedding (after ``tokenizer.add_tokens``): old rows kept, new rows
        set to the mean of the old ones (transformers draws them around that mean); updates
        ``vocab_size`` in the config. Returns the embedding."""
        old = self.get_input_embeddings()
        if not isinstance(old, nn.Embedding):
            raise ValueError(f"{type(self).__name__} has no token embedding to resize")
        if new_num_tokens is None:
            return old
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        new = nn.Embedding(
            new_num_tokens, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
        )
        kept = min(new_num_tokens, old.num_embeddings)
        new.weight[:kept] = old.weight[:kept]
        new.weight[kept:] = old.weight.float().mean(dim=0).to(old.weight.dtype)
        self.set_input_embeddings(new)
        text_config = getattr(self.config, "text_config", self.config)
        text_config.vocab_size = new_num_tokens
        return new


def _device_of(device_map):
    """transformers' single-device ``device_map`` spellings as a torch.device (None: leave as loaded)."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        if set(device_map) != {""}:
            raise ValueError(
                'device_map must put the whole model on one device ({"": device}); splitting CLIP across '
                "devices is not supported"
            )
        device_map = device_map[""]
    if device_map == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device_map in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map={device_map!r} splits a model across devices; pass one device instead")
    return torch.device(device_map)
