"""CLIP configurations that read and write Hugging Face's ``config.json`` field for field.

Plain dataclasses: the known fields carry transformers' names and defaults (ViT-B/32); any other
key found in a config.json is kept in ``extra`` and written back, so nothing is lost in a round trip.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from clip_core.files import HubOptions, atomic_write_text, read_json, resolve_file

CONFIG_NAME = "config.json"
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
MAX_CONFIG_BYTES = 4 * 2**20
# Sanity limits: far above any CLIP (ViT-bigG: 48 layers, width 1664, MLP 8192; the largest
# vocabularies ~250k), far below sizes that would hang or exhaust memory building the model.
LIMITS = {
    "num_hidden_layers": 1024,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_attention_heads": 4096,
    "projection_dim": 65536,
    "vocab_size": 4_194_304,
    "max_position_embeddings": 65536,
    "num_channels": 64,
    "image_size": 16384,
    "patch_size": 16384,
}
MAX_PATCHES = 65536  # (image_size / patch_size) ** 2: ViT-H/14 at 518 px has 1369


class ConfigError(ValueError):
    """A config that cannot describe a CLIP model."""


def _check_positive(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{owner}.{name} must be a positive integer, got {value!r}")
        if value > LIMITS.get(name, value):
            raise ConfigError(
                f"{owner}.{name} is {value:,}, above the sanity limit {LIMITS[name]:,} "
                "(clip_core.config.LIMITS): not a CLIP model this library can build"
            )


def _check_number(
    owner: str, name: str, value: Any, low: float, high: float = math.inf, open_low=False
) -> None:
    """A finite real number in [low, high] ((low, high] with open_low)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"{owner}.{name} must be a finite number in {interval}, got {value!r}")


def _check_common(owner: str, cfg: Any) -> None:
    _check_positive(
        owner,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        projection_dim=cfg.projection_dim,
    )
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(
            f"{owner}.hidden_size ({cfg.hidden_size}) must be divisible by "
            f"num_attention_heads ({cfg.num_attention_heads})"
        )
    if not isinstance(cfg.hidden_act, str) or cfg.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"{owner}.hidden_act {cfg.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    _check_number(owner, "layer_norm_eps", cfg.layer_norm_eps, 0, 1, open_low=True)
    _check_number(owner, "attention_dropout", cfg.attention_dropout, 0, 1)
    _check_number(owner, "initializer_range", cfg.initializer_range, 0)
    _check_number(owner, "initializer_factor", cfg.initializer_factor, 0)


# transformers' PretrainedConfig attributes that every config has, with transformers' defaults. They
# read as attributes of our configs; once set (by config.json, a keyword or an assignment) to
# anything but the default they live in ``extra`` and are written back, as transformers writes
# only what differs from the defaults.
COMMON_DEFAULTS: dict[str, Any] = {
    "return_dict": True,
    "output_hidden_states": False,
    "output_attentions": False,
    "torchscript": False,
    "dtype": None,
    "use_bfloat16": False,
    "tf_legacy_loss": False,
    "pruned_heads": {},
    "tie_word_embeddings": True,
    "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False,
    "is_decoder": False,
    "add_cross_attention": False,
    "architectures": None,
    "finetuning_task": None,
    "id2label": {0: "LABEL_0", 1: "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "task_specific_params": None,
    "problem_type": None,
    "tokenizer_class": None,
    "prefix": None,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "transformers_version": None,
}


def _json_value(name: str, value: Any) -> Any:
    """A value as config.json stores it: dtypes by name, id2label keys as ints (JSON makes them str)."""
    if name in ("dtype", "torch_dtype") and value is not None and not isinstance(value, str):
        value = str(getattr(value, "name", None) or value).removeprefix("torch.")
    if name == "id2label" and isinstance(value, dict):
        value = {int(k): v for k, v in value.items()}
    return value


def _is_default(name: str, value: Any) -> bool:
    return name in COMMON_DEFAULTS and value == COMMON_DEFAULTS[name]


class _ConfigBase:
    """Shared dict/JSON plumbing of the three config classes, and transformers' attribute API.

    Unknown attributes read from ``extra`` (then transformers' defaults, COMMON_DEFAULTS) and are
    written there, so ``config.output_hidden_states = True`` is both seen by the models and saved.
    """

    model_type: str = ""

    def __post_init__(self) -> None:
        self.extra = {k: _json_value(k, v) for k, v in self.extra.items() if not _is_default(k, v)}
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        extra = self.__dict__.get("extra", {})
        if name in ("dtype", "torch_dtype"):  # transformers 4.56 renamed torch_dtype to dtype
            return extra.get("dtype", extra.get("torch_dtype"))
        if name in extra:
            return extra[name]
        if name in COMMON_DEFAULTS:
            return copy.deepcopy(COMMON_DEFAULTS[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dataclass_fields__ or name.startswith("_") or hasattr(type(self), name):
            object.__setattr__(self, name, value)
            return
        names = [n for n in ("dtype", "torch_dtype") if n in self.extra] or ["dtype"]
        for key in names if name in ("dtype", "torch_dtype") else [name]:
            value = _json_value(key, value)
            if _is_default(key, value):
                self.extra.pop(key, None)
            else:
                self.extra[key] = value

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict) and not self.torchscript

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def name_or_path(self) -> str:
        """The folder or Hub id the config was read from ("" when built in code)."""
        return self.__dict__.get("_name_or_path", "")

    @classmethod
    def _known_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    def to_diff_dict(self) -> dict[str, Any]:
        """What config.json holds: the fields, and what ``extra`` holds (attributes set to non-defaults)."""
        return self._as_dict(diff=True)

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``extra``, and transformers' common attributes at their defaults when unset."""
        return self._as_dict(diff=False)

    def _as_dict(self, diff: bool) -> dict[str, Any]:
        out = {} if diff else copy.deepcopy(COMMON_DEFAULTS)
        out.update(copy.deepcopy(self.extra))
        for name in self._known_fields():
            value = getattr(self, name)
            out[name] = value._as_dict(diff) if isinstance(value, _ConfigBase) else value
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], return_unused_kwargs: bool = False, **overrides: Any):
        """A config from ``to_dict()`` / config.json contents; ``overrides`` set fields and
        attributes after it is read (transformers' semantics: see ``from_pretrained``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = cls._prepare(dict(data))
        known = set(cls._known_fields())
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "model_type"}
        config = cls(**kwargs, extra=extra)
        return config._with_overrides(overrides, return_unused_kwargs, "from_dict")

    def _with_overrides(self, overrides: dict[str, Any], return_unused_kwargs: bool, method: str):
        """Set each override that names a field, a transformers attribute or a key of ``extra``;
        the rest are returned (``return_unused_kwargs``) or refused, never dropped silently."""
        unused = {}
        for key, value in overrides.items():
            if (
                key in self._known_fields()
                or key in COMMON_DEFAULTS
                or key in self.extra
                or key == "torch_dtype"
            ):
                setattr(self, key, value)
            else:
                unused[key] = value
        if overrides:
            self.validate()
        if return_unused_kwargs:
            return self, unused
        if unused:
            raise TypeError(
                f"{type(self).__name__}.{method} got keyword arguments that are not config fields: "
                f"{sorted(unused)} (pass return_unused_kwargs=True to get them back)"
            )
        return self

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        atomic_write_text(json_file_path, self.to_json_string(use_diff))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> str:
        """Write config.json (atomically) into ``save_directory``; transformers' push_to_hub is not supported."""
        if kwargs.pop("push_to_hub", False):
            raise ValueError("push_to_hub is not supported: upload the folder with huggingface_hub instead")
        if kwargs:
            raise TypeError(f"save_pretrained got unexpected keyword arguments {sorted(kwargs)}")
        if os.path.isfile(save_directory):
            raise ConfigError(f"save_pretrained expects a folder, got the file {save_directory}")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        """Read a config.json; every problem is a ConfigError naming the file (and the field)."""
        try:
            data = read_json(path, MAX_CONFIG_BYTES)
        except ValueError as e:
            raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        try:
            return cls._from_config_json(data, str(path))
        except ConfigError as e:
            raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{path}: not a valid {cls.__name__} ({type(e).__name__}: {e})") from None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        return_unused_kwargs: bool = False,
        hub: HubOptions | None = None,
        **kwargs: Any,
    ):
        """Read a config from a folder, a config.json file, or a Hub model id (through its local cache).

        As transformers: the Hub keywords (``subfolder``, ``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ...) say where the file is; every other keyword that names a
        field or attribute (``projection_dim=...``, ``output_hidden_states=True``) overrides it. Other
        keywords are returned with ``return_unused_kwargs=True`` and refused otherwise. ``hub``: those
        file options already parsed (clip_core.files.HubOptions).
        """
        hub = hub if hub is not None else HubOptions.pop_from(kwargs)
        config = cls.from_json_file(resolve_file(pretrained_model_name_or_path, CONFIG_NAME, hub=hub))
        config._name_or_path = os.fspath(pretrained_model_name_or_path)
        return config._with_overrides(kwargs, return_unused_kwargs, "from_pretrained")

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set each key of ``config_dict`` as an attribute (fields, or kept in ``extra``), as transformers."""
        for key, value in config_dict.items():
            setattr(self, key, value)
        self.validate()

    def update_from_string(self, update_str: str) -> None:
        """transformers' ``"key=value,key=value"`` update: the keys must exist; values take their type."""
        for item in update_str.split(","):
            key, text = item.split("=", 1)
            old = getattr(self, key, _MISSING)
            if old is _MISSING:
                raise ValueError(f"key {key} isn't in the original config dict")
            if isinstance(old, bool):
                if text.lower() not in ("true", "1", "y", "yes", "false", "0", "n", "no"):
                    raise ValueError(f"can't derive true or false from {text} (key {key})")
                value = text.lower() in ("true", "1", "y", "yes")
            elif isinstance(old, (int, float, str)):
                value = type(old)(text)
            else:
                raise TypeError(
                    f"You can only update int, float, bool or string values in the config, got {text} for key {key}"
                )
            setattr(self, key, value)
        self.validate()

    def to_transformers(self):
        """This config as transformers' own config class (transformers must be installed)."""
        try:
            import transformers
        except ImportError:
            raise ImportError("to_transformers needs transformers (pip install transformers)") from None
        name = {
            "clip": "CLIPConfig",
            "clip_text_model": "CLIPTextConfig",
            "clip_vision_model": "CLIPVisionConfig",
        }
        return getattr(transformers, name[self.model_type]).from_dict(self.to_diff_dict())

    # Where a config.json came from, not what model it describes: left out of ==.
    _PROVENANCE = ("architectures", "dtype", "torch_dtype", "transformers_version")

    def _described(self) -> dict[str, Any]:
        data = self.to_dict()
        for key in self._PROVENANCE:
            data.pop(key, None)
        for key, value in data.items():
            if isinstance(value, dict) and "model_type" in value:
                data[key] = {k: v for k, v in value.items() if k not in self._PROVENANCE}
        return data

    def __eq__(self, other: object) -> bool:
        """The same model described: every field and attribute but the provenance ones
        (``architectures``, ``dtype``, ``transformers_version``), which save_pretrained records."""
        return type(self) is type(other) and self._described() == other._described()


_MISSING = object()


def _sub_config_from(cls, data: dict[str, Any], key: str, source: str):
    """A tower's config from either its own config.json or a full CLIP config.json."""
    model_type = data.get("model_type")
    if model_type == cls.model_type:
        return cls.from_dict(data)
    if model_type == "clip" or key in data or f"{key}_dict" in data:
        full = CLIPConfig._from_config_json(data, source)
        # The projections stored in a full CLIP checkpoint have the top-level projection_dim; the
        # tower's own field is unused by CLIPModel and often left at its default (512). Taking it
        # would make a WithProjection model that cannot load those weights (transformers does).
        return dataclasses.replace(getattr(full, key), projection_dim=full.projection_dim)
    raise ConfigError(f"{source} is not a CLIP config (model_type={model_type!r})")


@dataclass(eq=False)
class CLIPTextConfig(_ConfigBase):
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip_text_model"

    def validate(self) -> None:
        _check_common("CLIPTextConfig", self)
        _check_positive(
            "CLIPTextConfig", vocab_size=self.vocab_size, max_position_embeddings=self.max_position_embeddings
        )
        eos = self.eos_token_id
        if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int)):
            raise ConfigError(f"CLIPTextConfig.eos_token_id must be an integer or null, got {eos!r}")
        if eos is not None and eos != 2 and not 0 <= eos < self.vocab_size:
            # pooling looks for eos_token_id in input_ids, which are < vocab_size: it would never find it
            raise ConfigError(
                f"CLIPTextConfig.eos_token_id {eos} is outside the vocabulary (vocab_size {self.vocab_size}): "
                "no input could contain it, so the text tower would pool at the wrong position"
            )

    @property
    def uses_legacy_eos_pooling(self) -> bool:
        """Configs written before transformers' fix say eos_token_id == 2 and pool at argmax(input_ids)."""
        return self.eos_token_id == 2

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        return _sub_config_from(cls, data, "text_config", source)


@dataclass(eq=False)
class CLIPVisionConfig(_ConfigBase):
    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip_vision_model"

    def validate(self) -> None:
        _check_common("CLIPVisionConfig", self)
        _check_positive(
            "CLIPVisionConfig",
            num_channels=self.num_channels,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"CLIPVisionConfig.image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.num_patches > MAX_PATCHES:
            raise ConfigError(
                f"CLIPVisionConfig.image_size {self.image_size} / patch_size {self.patch_size} makes "
                f"{self.num_patches:,} patches, above the sanity limit {MAX_PATCHES:,}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        return _sub_config_from(cls, data, "vision_config", source)


@dataclass(eq=False)
class CLIPConfig(_ConfigBase):
    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip"

    def __post_init__(self) -> None:
        if isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig.from_dict(self.text_config)
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig.from_dict(self.vision_config)
        super().__post_init__()

    def validate(self) -> None:
        _check_positive("CLIPConfig", projection_dim=self.projection_dim)
        _check_number("CLIPConfig", "logit_scale_init_value", self.logit_scale_init_value, -math.inf)
        _check_number("CLIPConfig", "initializer_factor", self.initializer_factor, 0)
        if not isinstance(self.text_config, CLIPTextConfig) or not isinstance(
            self.vision_config, CLIPVisionConfig
        ):
            raise ConfigError(
                "CLIPConfig needs a CLIPTextConfig and a CLIPVisionConfig (or dicts of their fields)"
            )

    @classmethod
    def from_text_vision_configs(
        cls, text_config: CLIPTextConfig, vision_config: CLIPVisionConfig, **kwargs: Any
    ):
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        # Configs written by early transformers releases nest the towers under *_config_dict;
        # like transformers, those values win over *_config ones.
        for key in ("text_config", "vision_config"):
            legacy = data.pop(f"{key}_dict", None)
            if legacy is not None:
                data[key] = {**(data.get(key) or {}), **legacy}
        text = data.pop("text_config", None) or {}
        vision = data.pop("vision_config", None) or {}
        if not isinstance(text, (dict, CLIPTextConfig)) or not isinstance(vision, (dict, CLIPVisionConfig)):
            raise ConfigError("CLIPConfig text_config and vision_config must be JSON objects")
        return {**data, "text_config": text, "vision_config": vision}

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        model_type = data.get("model_type")
        if model_type not in (None, "clip") or not any(
            k in data for k in ("text_config", "vision_config", "text_config_dict", "vision_config_dict")
        ):
            raise ConfigError(f"{source} is not a CLIP config (model_type={model_type!r})")
        return cls.from_dict(data)
