"""The framework-free half of every backend's ``from_pretrained`` / ``save_pretrained``.

``PretrainedModelMixin`` gives a backend's model classes transformers' loading and saving flow;
the backend supplies small hooks that are truly framework code:

- ``_loading_options(*args, **kwargs)`` (classmethod, optional): check and normalise the loading
  options (a dtype name, ...) before any file is read;
- ``_for_loading(config, *args, **kwargs)`` (classmethod): an instance ready to receive weights
  (no random initialisation where the framework can skip it);
- ``_assign_canonical_state(state)``: take canonical numpy arrays (names and shapes already
  checked against the model here) as the parameters;
- ``canonical_state()``: the parameters as canonical numpy arrays.

Config choice, checkpoint files, name and shape checks and atomic writes live here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.files import resolve_file
from clip_core.folder_save import check_folder, verify_files
from clip_core.modeling_utils import as_config
from clip_core.names import CheckpointError, canonical_shapes, fit_problems, model_kind, select_for_model
from clip_core.weights import open_checkpoint, save_folder


def load_config(pretrained: str | os.PathLike, kind: str):
    """The config a model of ``kind`` needs; a tower's config is taken from a full CLIP config too."""
    return model_kind(kind).config_class.from_pretrained(pretrained)


def load_pretrained(pretrained: str | os.PathLike, kind: str, config=None, verify: bool = False):
    """(config, state) for a model of ``kind``: state holds exactly its canonical tensors, checked.

    Names and shapes are checked against the config before any tensor is read, and only the tensors
    the model takes are read. verify: compare config.json and the weights with the folder's
    checksums.sha256 first. A folder left mid-save is refused (clip_core.folder_save)."""
    if os.path.isdir(pretrained):
        check_folder(pretrained)
    if config is None:
        if verify:
            path = resolve_file(pretrained, "config.json")
            verify_files(os.path.dirname(path), [os.path.basename(path)])
        config = load_config(pretrained, kind)
    else:
        config = as_config(config, model_kind(kind).config_class)
    with open_checkpoint(pretrained, verify=verify) as reader:
        problems = fit_problems({name: reader.info(name)[0] for name in reader}, config, kind)
        if problems:
            raise CheckpointError(f"{reader.path} does not fit the model ({kind}): " + " | ".join(problems))
        state = {name: reader[name] for name in canonical_shapes(config, kind)}
    return config, select_for_model(state, config, kind)


def save_pretrained(
    folder: str | os.PathLike, config, state: Mapping[str, np.ndarray], **save_kwargs
) -> list[str]:
    """Write config.json and the weights as one save: all of them land, or none (a crash leaves the
    old files, or a folder the loaders refuse until the save is finished; see clip_core.folder_save),
    with a checksums.sha256 listing them."""
    if os.path.isfile(folder):
        raise ValueError(f"save_pretrained expects a folder, got the file {folder}")
    return save_folder(folder, state, config=config, **save_kwargs)


class PretrainedModelMixin:
    """from_pretrained / save_pretrained / load_canonical_state over the backend's hooks.

    A public class names its ``model_kind``; its ``config_class`` and ``with_projection`` follow
    from clip_core.names.MODEL_KINDS.
    """

    model_kind = "clip"
    config_class = CLIPConfig
    with_projection = False
    default_formats: tuple[str, ...] = ("safetensors",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "model_kind" in cls.__dict__:
            kind = model_kind(cls.model_kind)
            cls.config_class, cls.with_projection = kind.config_class, kind.with_projection

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """A model with the weights of a checkpoint folder (config.json + model.safetensors,
        pytorch_model.bin, tf_model.h5 or flax_model.msgpack, sharded or not) or a cached Hub id."""
        verify = kwargs.pop("verify", False)  # compare with the folder's checksums.sha256 first
        model_args, kwargs = cls._loading_options(*model_args, **kwargs)  # bad options fail before any read
        config, state = load_pretrained(pretrained_model_name_or_path, cls.model_kind, config, verify=verify)
        model = cls._for_loading(config, *model_args, **kwargs)
        model._assign_canonical_state(state)
        return model._after_loading()

    @classmethod
    def _loading_options(cls, *args, **kwargs) -> tuple[tuple, dict]:
        return args, kwargs

    @classmethod
    def _for_loading(cls, config, *args, **kwargs):
        return cls(config, *args, **kwargs)

    def _after_loading(self):
        return self

    def load_canonical_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Take canonical numpy arrays (checked by name and shape against the model) as the parameters."""
        self._assign_canonical_state(select_for_model(state, self.config, self.model_kind))

    def _assign_canonical_state(self, state: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def canonical_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def save_pretrained(self, save_directory, formats=None, max_shard_size=None) -> list[str]:
        """Write config.json and the weights (canonical names) in ``formats``: any of "safetensors",
        "pytorch", "tf", "flax"; each file lands atomically. Returns the paths written."""
        return self._save(save_directory, self.canonical_state(), formats, max_shard_size)

    def _save(self, save_directory, state, formats=None, max_shard_size=None) -> list[str]:
        formats = self.default_formats if formats is None else formats
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        return save_pretrained(
            save_directory,
            self.config,
            state,
            formats=formats,
            model_kind=self.model_kind,
            max_shard_size=max_shard_size,
        )
