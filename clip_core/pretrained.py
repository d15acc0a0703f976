"""The framework-free half of every backend's ``from_pretrained`` / ``save_pretrained``.

``PretrainedModelMixin`` gives a backend's model classes transformers' loading and saving flow;
the backend supplies small hooks that are truly framework code:

- ``_loading_options(*args, **kwargs)`` (classmethod, optional): backend keywords normalised
  before any file is read (Flax: the dtype transformers takes as the second positional argument);
- ``_framework_dtype(dtype)`` (classmethod): a dtype name ("float32", "bfloat16", "float16") or
  the framework's own dtype object -> what the backend's ``_for_loading`` takes, or ValueError;
- ``_for_loading(config, *args, dtype=None, **kwargs)`` (classmethod): an instance ready to
  receive weights (no random initialisation where the framework can skip it);
- ``_assign_canonical_state(state)``: take canonical numpy arrays (names and shapes already
  checked against the model here) as the parameters;
- ``canonical_state()``: the parameters as canonical numpy arrays;
- ``_after_loading()``: what ``from_pretrained`` returns (eval mode, Flax's ``(model, params)``...).

Every keyword transformers' ``from_pretrained`` takes is handled here once for the three backends
(``LoadRequest``): where the files are (``subfolder``, ``revision``, ``cache_dir``,
``local_files_only``, ``token``...), which file (``from_pt`` / ``from_tf`` / ``from_flax``,
``use_safetensors``, ``variant``), the dtype (``dtype`` / ``torch_dtype``, "auto" = the dtype in
config.json, else the checkpoint's), config overrides (``output_hidden_states=True``), ``config=``
as our config, a transformers config or a path, ``output_loading_info``. Keywords that cannot apply
to us (quantization, tensor parallelism, ...) raise an error that says so; none is dropped silently.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.files import HubOptions, resolve_file
from clip_core.folder_save import check_folder, verify_files
from clip_core.formats.base import is_floating
from clip_core.modeling_utils import as_config, check_attn_implementation
from clip_core.names import (
    DTYPE_NAMES,
    CheckpointError,
    canonical_shapes,
    fit_problems,
    is_ignored,
    model_kind,
    select_for_model,
)
from clip_core.weights import open_checkpoint, save_folder

# Accepted for compatibility; they change nothing here (and say why).
_NO_EFFECT = {
    "low_cpu_mem_usage": "weights are always loaded without a random initialisation first",
    "_fast_init": "weights are always loaded without a random initialisation first",
    "weights_only": "pytorch_model.bin is always read with torch.load(weights_only=True)",
    "trust_remote_code": "CLIP needs no remote code",
    "offload_state_dict": "tensors stream one at a time anyway",
    "_from_auto": "",
    "_from_pipeline": "",
}
# Refused: what to do instead.
_UNSUPPORTED = {
    "quantization_config": "quantization is not supported; load in bfloat16 or float16 with dtype=",
    "load_in_8bit": "quantization is not supported; load in bfloat16 or float16 with dtype=",
    "load_in_4bit": "quantization is not supported; load in bfloat16 or float16 with dtype=",
    "gguf_file": "GGUF files are not supported; convert the checkpoint with clip-convert",
    "tp_plan": "tensor parallelism is not supported; CLIP fits on one device",
    "tp_size": "tensor parallelism is not supported; CLIP fits on one device",
    "device_mesh": "tensor parallelism is not supported; CLIP fits on one device",
    "max_memory": "device_map offloading is not supported; CLIP fits on one device",
    "offload_folder": "device_map offloading is not supported; CLIP fits on one device",
    "offload_buffers": "device_map offloading is not supported; CLIP fits on one device",
    "key_mapping": "checkpoints with other parameter names are read by clip-convert (OpenAI, open_clip)",
    "adapter_kwargs": "PEFT adapters are not supported; merge the adapter into the weights first",
    "adapter_name": "PEFT adapters are not supported; merge the adapter into the weights first",
    "state_dict": "pass a folder or file; to use tensors you hold, call model.load_canonical_state(state)",
    "from_tf_checkpoint": "TF1 checkpoints are not supported",
    "load_weight_prefix": "not needed: variable names do not depend on a prefix here",
    "tf_to_pt_weight_rename": "not needed: weights are read by canonical name in every framework",
}


def loading_info(unused: list[str]) -> dict[str, list]:
    """transformers' ``output_loading_info`` dict. Every tensor a model needs is checked when it loads
    (missing or misshapen ones raise CheckpointError), so only ``unexpected_keys`` can be non-empty:
    the checkpoint's tensors the model does not use (the other tower of a full CLIP checkpoint)."""
    return {"missing_keys": [], "unexpected_keys": sorted(unused), "mismatched_keys": [], "error_msgs": []}


@dataclass
class LoadRequest:
    """transformers' ``from_pretrained`` keywords that are not framework code, parsed and checked."""

    hub: HubOptions = field(default_factory=HubOptions)
    prefer: str | None = None  # the format from_pt / from_tf / from_flax asks for
    use_safetensors: bool | None = None
    variant: str | None = None
    dtype: Any = None  # None, "auto", a name or the framework's dtype object
    attn_implementation: str | None = None
    output_loading_info: bool = False
    verify: bool = False  # compare config.json and the weights with the folder's checksums.sha256 first

    @classmethod
    def pop_from(cls, kwargs: dict, owner: str) -> LoadRequest:
        """The request in ``kwargs`` (its keys removed); refused keywords raise ValueError here."""
        for name, reason in _UNSUPPORTED.items():
            if name in kwargs and kwargs[name] not in (None, False, {}):
                raise ValueError(f"{owner}.from_pretrained: {name} is not supported: {reason}")
            kwargs.pop(name, None)
        for name in _NO_EFFECT:
            kwargs.pop(name, None)
        if kwargs.pop("ignore_mismatched_sizes", False):
            raise ValueError(
                f"{owner}.from_pretrained: ignore_mismatched_sizes=True is not supported: load the "
                "checkpoint with its own config, then replace the layers whose shape you change"
            )
        prefer = [fmt for key, fmt in _FORMAT_KEYWORDS if kwargs.pop(key, False)]
        if len(prefer) > 1:
            raise ValueError(f"{owner}.from_pretrained: give at most one of from_pt, from_tf, from_flax")
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
        attn = kwargs.pop("attn_implementation", None)
        if attn is not None:
            check_attn_implementation(attn)
        return cls(
            hub=HubOptions.pop_from(kwargs),
            prefer=prefer[0] if prefer else None,
            use_safetensors=kwargs.pop("use_safetensors", None),
            variant=kwargs.pop("variant", None),
            dtype=dtype if dtype is not None else torch_dtype,  # as transformers: dtype wins
            attn_implementation=attn,
            output_loading_info=bool(kwargs.pop("output_loading_info", False)),
            verify=bool(kwargs.pop("verify", False)),
        )

    def config(self, kind: str, pretrained, config, kwargs: dict) -> tuple[Any, dict]:
        """(the model's config, the keywords left for the model class).

        With no ``config`` (or a path), it is read and every keyword that names a config field or
        attribute overrides it (transformers' rule). A config object (ours, or transformers') is
        copied; keywords naming its fields override the copy (transformers passes them to the model
        class, which refuses them).
        """
        config_class = model_kind(kind).config_class
        if config is None or isinstance(config, (str, os.PathLike)):
            source = pretrained if config is None else config
            if source is None:
                raise ValueError(
                    "from_pretrained needs a folder, a file or a Hub id, or config= and a source"
                )
            if self.verify:
                self.verify_config(source)
            return config_class.from_pretrained(source, return_unused_kwargs=True, hub=self.hub, **kwargs)
        config = copy.deepcopy(as_config(config, config_class))
        return config._with_overrides(kwargs, True, "from_pretrained")

    def verify_config(self, pretrained) -> None:
        path = resolve_file(pretrained, "config.json", hub=self.hub)
        verify_files(os.path.dirname(path), [os.path.basename(path)])

    def state(self, pretrained, config, kind: str) -> tuple[dict[str, np.ndarray], list[str]]:
        """(the canonical tensors the model needs, checked by name and shape against the config
        before any tensor is read, and only those read; the names of the checkpoint's other tensors)."""
        options = dict(prefer=self.prefer, use_safetensors=self.use_safetensors, variant=self.variant)
        with open_checkpoint(pretrained, hub=self.hub, verify=self.verify, **options) as reader:
            problems = fit_problems({name: reader.info(name)[0] for name in reader}, config, kind)
            if problems:
                raise CheckpointError(
                    f"{reader.path} does not fit the model ({kind}): " + " | ".join(problems)
                )
            needed = canonical_shapes(config, kind)
            state = {name: reader[name] for name in needed}
            unused = [name for name in reader if name not in needed and not is_ignored(name)]
        return select_for_model(state, config, kind), unused


_FORMAT_KEYWORDS = (("from_pt", "safetensors"), ("from_tf", "tf"), ("from_flax", "flax"))


def auto_dtype(config, state: Mapping[str, np.ndarray]) -> str:
    """dtype="auto": the dtype config.json names (``dtype`` / ``torch_dtype``), else the checkpoint's
    first floating tensor's, as transformers."""
    name = getattr(config, "dtype", None)
    if name is None:
        name = next(
            (np.dtype(a.dtype).name for a in state.values() if is_floating(np.dtype(a.dtype))), "float32"
        )
    name = str(name).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ValueError(f'dtype="auto" found {name!r} in the checkpoint; expected one of {DTYPE_NAMES}')
    return name


def load_pretrained(pretrained: str | os.PathLike, kind: str, config=None, verify: bool = False):
    """(config, state) for a model of ``kind``: state holds exactly its canonical tensors, checked.

    The config is read from ``pretrained`` (a tower's from a full CLIP config too) unless given.
    Names and shapes are checked against the config before any tensor is read, and only the tensors
    the model takes are read. verify: compare config.json and the weights with the folder's
    checksums.sha256 first. A folder left mid-save is refused (clip_core.folder_save)."""
    request = LoadRequest(verify=verify)
    if os.path.isdir(pretrained):
        check_folder(pretrained)
    config, _ = request.config(kind, pretrained, config, {})
    return config, request.state(pretrained, config, kind)[0]


def save_pretrained(
    folder: str | os.PathLike, config, state: Mapping[str, np.ndarray], **save_kwargs
) -> list[str]:
    """Write config.json and the weights as one save: all of them land, or none (a crash leaves the
    old files, or a folder the loaders refuse until the save is finished; see clip_core.folder_save),
    with a checksums.sha256 listing them. As transformers, config.json records the class
    (``architectures``) and the weights' dtype."""
    if os.path.isfile(folder):
        raise ValueError(f"save_pretrained expects a folder, got the file {folder}")
    config = copy.deepcopy(config)
    kind = save_kwargs.get("model_kind")
    if kind is not None:
        config.architectures = [model_kind(kind).architecture]
    floating = [np.dtype(a.dtype).name for a in state.values() if is_floating(np.dtype(a.dtype))]
    if floating:
        config.dtype = floating[0]
    return save_folder(folder, state, config=config, **save_kwargs)


_NO_PUSH = (
    "{name}: push_to_hub is not implemented here: save_pretrained(folder), then upload the folder with "
    "huggingface_hub: HfApi().upload_folder(repo_id={repo_id!r}, folder_path=folder)"
)


class PretrainedModelMixin:
    """from_pretrained / save_pretrained / load_canonical_state over the backend's hooks.

    A public class names its ``model_kind``; its ``config_class`` and ``with_projection`` follow
    from clip_core.names.MODEL_KINDS. ``default_formats`` is what ``save_pretrained`` writes by
    default, ``unsafe_format`` what it writes with ``safe_serialization=False`` (transformers'
    native format of the framework).
    """

    model_kind = "clip"
    config_class = CLIPConfig
    with_projection = False
    default_formats: tuple[str, ...] = ("safetensors",)
    unsafe_format = "pytorch"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "model_kind" in cls.__dict__:
            kind = model_kind(cls.model_kind)
            cls.config_class, cls.with_projection = kind.config_class, kind.with_projection

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *model_args, config=None, **kwargs):
        """A model with the weights of a checkpoint folder (config.json + model.safetensors,
        pytorch_model.bin, tf_model.h5 or flax_model.msgpack, sharded or not), a weights file, or a
        cached Hub id; transformers' keywords (see the module docstring) work in every backend."""
        model_args, kwargs = cls._loading_options(*model_args, **kwargs)
        request = LoadRequest.pop_from(kwargs, cls.__name__)  # bad options fail before any read
        if pretrained_model_name_or_path is not None and os.path.isdir(pretrained_model_name_or_path):
            check_folder(pretrained_model_name_or_path)  # a folder left mid-save is refused
        dtype = request.dtype
        if dtype is not None and dtype != "auto":
            dtype = cls._framework_dtype(dtype)
        config, model_kwargs = request.config(cls.model_kind, pretrained_model_name_or_path, config, kwargs)
        if pretrained_model_name_or_path is None:
            raise ValueError(f"{cls.__name__}.from_pretrained needs a folder, a weights file or a Hub id")
        state, unused = request.state(pretrained_model_name_or_path, config, cls.model_kind)
        if dtype == "auto":
            dtype = cls._framework_dtype(auto_dtype(config, state))
        if request.attn_implementation is not None:
            model_kwargs["attn_implementation"] = request.attn_implementation
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        model = cls._for_loading(config, *model_args, **model_kwargs)
        model._assign_canonical_state(state)
        loaded = model._after_loading()
        if request.output_loading_info:
            info = loading_info(unused)
            return (*loaded, info) if isinstance(loaded, tuple) else (loaded, info)
        return loaded

    @classmethod
    def _loading_options(cls, *args, **kwargs) -> tuple[tuple, dict]:
        return args, kwargs

    @classmethod
    def _framework_dtype(cls, dtype):
        raise NotImplementedError

    @classmethod
    def _for_loading(cls, config, *args, **kwargs):
        return cls(config, *args, **kwargs)

    def _after_loading(self):
        return self

    @classmethod
    def from_config(cls, config, **kwargs):
        """A randomly initialised model for ``config`` (ours, transformers', or their dicts);
        ``dtype`` / ``torch_dtype`` ("auto": the config's) as in from_pretrained."""
        config = as_config(config, cls.config_class)
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
        dtype = dtype if dtype is not None else torch_dtype
        if dtype == "auto":
            dtype = getattr(config, "dtype", None) or "float32"
        if dtype is not None:
            kwargs["dtype"] = cls._framework_dtype(dtype)
        return cls._from_config(config, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        return cls(config, **kwargs)

    @property
    def name_or_path(self) -> str:
        return self.config.name_or_path

    @property
    def main_input_name(self) -> str:
        return "pixel_values" if self.model_kind.startswith("vision") else "input_ids"

    @classmethod
    def can_generate(cls) -> bool:
        """CLIP does not generate text (transformers' answer for its CLIP classes too)."""
        return False

    def load_canonical_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Take canonical numpy arrays (checked by name and shape against the model) as the parameters."""
        self._assign_canonical_state(select_for_model(state, self.config, self.model_kind))

    def _assign_canonical_state(self, state: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def canonical_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def save_pretrained(self, save_directory, formats=None, max_shard_size=None, **kwargs) -> list[str]:
        """Write config.json and the weights (canonical names) in ``formats``: any of "safetensors",
        "pytorch", "tf", "flax"; each file lands atomically. Returns the paths written.

        transformers' keywords: ``safe_serialization`` (True: model.safetensors; False: the
        framework's own format), ``max_shard_size``, ``is_main_process`` (False writes nothing).
        """
        return self._save(save_directory, self.canonical_state(), formats, max_shard_size, **kwargs)

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """Not implemented here: the error says how to upload a saved folder instead."""
        raise NotImplementedError(_NO_PUSH.format(name=type(self).__name__, repo_id=repo_id))

    def _save(
        self,
        save_directory,
        state,
        formats=None,
        max_shard_size=None,
        safe_serialization=None,
        is_main_process=True,
        **kwargs,
    ) -> list[str]:
        refused = {k: v for k, v in kwargs.items() if v not in (None, False)}
        if refused.get("push_to_hub"):
            raise ValueError(
                _NO_PUSH.format(name=type(self).__name__, repo_id=kwargs.get("repo_id", "org/name"))
            )
        if refused:
            raise TypeError(
                f"{type(self).__name__}.save_pretrained does not support {sorted(refused)} "
                "(variant, state_dict and save_function are transformers options not implemented here)"
            )
        if not is_main_process:
            return []
        if formats is None:
            formats = self.default_formats
            if safe_serialization is not None:
                formats = ("safetensors",) if safe_serialization else (self.unsafe_format,)
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        return save_pretrained(
            save_directory,
            self.config,
            state,
            formats=formats,
            model_kind=self.model_kind,
            max_shard_size=max_shard_size,
        )
