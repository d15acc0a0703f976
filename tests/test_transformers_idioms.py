"""Code written against transformers 4.57.6's CLIP classes runs on ours with only the import changed.

Each idiom in ``IDIOMS`` runs against ours and against transformers on the same tiny checkpoint
folders, written by transformers itself (PyTorch ``save_pretrained``; its TF and Flax classes for
their formats), and checks the same result: numbers within 1e-5 in fp32, the same keys, shapes,
dtypes and ids. ``status`` says what is compared:

- "same": ours gives what transformers gives;
- "ours only": transformers itself fails (the reason is in the idiom's note); ours must work;
- "clear error": the idiom cannot apply to us; ours raises an error that says what to do instead.

``python -m tools.idioms_report`` runs this module and prints the table (MIGRATION.md holds it).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from clip_core.bpe_vocab import openai_vocab, write_vocab_files  # noqa: E402
from clip_core.config import CLIPConfig, CLIPTextConfig  # noqa: E402
from clip_core.image_processing import CLIPImageProcessor  # noqa: E402
from clip_core.processing import CLIPProcessor  # noqa: E402
from clip_core.tokenization import CLIPTokenizer  # noqa: E402
from clip_core.tokenization_fast import CLIPTokenizerFast  # noqa: E402
from tests.tiny_configs import CONFIGS, assert_close  # noqa: E402

TEXTS = ["a photo of a cat", "a dog on the beach at night", "Hello world, it's me!"]
CONTEXT = 16  # the tiny text tower's positions (the tokenizer's model_max_length too)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Idiom:
    id: str
    area: str
    backend: str  # "torch", "tf", "flax", "core" (configs, tokenizers, processors: every backend)
    status: str  # "same", "ours only", "clear error"
    text: str  # what the user writes
    run: Callable

    def __str__(self) -> str:
        return self.id


IDIOMS: list[Idiom] = []


def idiom(id: str, area: str, backend: str, text: str, status: str = "same"):
    def register(run):
        IDIOMS.append(Idiom(id, area, backend, status, text, run))
        return run

    return register


def close(ours, theirs, what, atol=1e-5):
    assert_close(np.asarray(ours, np.float64), np.asarray(theirs, np.float64), what, atol=atol)


# ---------------------------------------------------------------------------------------------
# The checkpoint folders (written by transformers) and the models, built once per module


class Context:
    """Everything the idioms share, built lazily: only what the selected idioms need is made."""

    def __init__(self, root):
        self.root = root

    def folder(self, name):
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def hf_config(self):
        return transformers.CLIPConfig(**copy.deepcopy(CONFIGS["quick_gelu-eos49407"]))

    @cached_property
    def hf_torch(self):
        torch.manual_seed(0)
        return transformers.CLIPModel(self.hf_config).eval()

    @cached_property
    def pt(self):
        """transformers' folder: config.json, model.safetensors, tokenizer and preprocessor files."""
        folder = self.folder("pt")
        self.hf_torch.save_pretrained(folder)
        self.hf_tokenizer_fast.save_pretrained(folder)
        transformers.CLIPImageProcessor(size=32, crop_size=32).save_pretrained(folder)
        return str(folder)

    @cached_property
    def bin(self):
        folder = self.folder("bin")
        self.hf_torch.save_pretrained(folder, safe_serialization=False)
        return str(folder)

    @cached_property
    def tf_folder(self):
        """tf_model.h5 written by transformers' TFCLIPModel (converted by transformers from PyTorch)."""
        folder = self.folder("tf")
        self.hf_tf.save_pretrained(folder)
        return str(folder)

    @cached_property
    def flax_folder(self):
        """flax_model.msgpack written by transformers' FlaxCLIPModel."""
        folder = self.folder("flax")
        self.hf_flax.save_pretrained(folder, params=self.hf_flax_params)
        return str(folder)

    @cached_property
    def stable_diffusion(self):
        """A Stable Diffusion-style repo: the text encoder and tokenizer in subfolders."""
        root = self.folder("sd")
        transformers.CLIPTextModel.from_pretrained(self.pt).save_pretrained(root / "text_encoder")
        self.hf_tokenizer.save_pretrained(root / "tokenizer")
        return str(root)

    @cached_property
    def hub_cache(self):
        """An offline Hub cache holding org/tiny-clip at "main" and at the tag "v1" (its text encoder
        also under text_encoder/), as huggingface_hub lays it out."""
        cache = self.folder("hub")
        repo = cache / "models--org--tiny-clip"
        snapshot = repo / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        for ref in ("main", "v1"):
            (repo / "refs" / ref).write_text(COMMIT)
        for name in os.listdir(self.pt):
            os.symlink(os.path.join(self.pt, name), snapshot / name)
        os.symlink(os.path.join(self.stable_diffusion, "text_encoder"), snapshot / "text_encoder")
        return str(cache)

    @cached_property
    def vocab_files(self):
        folder = self.folder("vocab")
        encoder, merges = openai_vocab()
        return write_vocab_files(str(folder), encoder, merges)

    @cached_property
    def hf_tokenizer(self):
        return transformers.CLIPTokenizer(*self.vocab_files, model_max_length=CONTEXT)

    @cached_property
    def hf_tokenizer_fast(self):
        return transformers.CLIPTokenizerFast(*self.vocab_files, model_max_length=CONTEXT)

    def tokenizers(self, fresh: bool = False):
        """(ours, theirs) for the slow and the fast tokenizer; ``fresh`` ones for idioms that change them."""
        if not fresh:
            return self._tokenizers
        return [
            (CLIPTokenizer.from_pretrained(self.pt), transformers.CLIPTokenizer.from_pretrained(self.pt)),
            (
                CLIPTokenizerFast.from_pretrained(self.pt),
                transformers.CLIPTokenizerFast.from_pretrained(self.pt),
            ),
        ]

    @cached_property
    def _tokenizers(self):
        return self.tokenizers(fresh=True)

    @cached_property
    def images(self):
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(len(TEXTS))]

    @cached_property
    def inputs(self):
        """numpy inputs from transformers' processor (ids, mask, channels-first pixels)."""
        processor = transformers.CLIPProcessor.from_pretrained(self.pt)
        out = processor(text=TEXTS, images=self.images, return_tensors="np", padding=True)
        return {k: np.asarray(v) for k, v in out.items()}

    def pt_inputs(self, **names):
        return {k: torch.from_numpy(self.inputs[k]) for k in names or self.inputs}

    @cached_property
    def reference(self):
        """transformers' PyTorch CLIPModel output on ``inputs`` (the numbers every backend must give)."""
        with torch.no_grad():
            return self.hf_torch(**self.pt_inputs())

    def logits(self):
        return self.reference.logits_per_image.numpy()

    @cached_property
    def torch_model(self):
        from clip_torch import CLIPModel

        return CLIPModel.from_pretrained(self.pt)

    @cached_property
    def hf_tf(self):
        return transformers.TFCLIPModel.from_pretrained(self.bin, from_pt=True)

    @cached_property
    def tf_model(self):
        from clip_tf import TFCLIPModel

        return TFCLIPModel.from_pretrained(self.pt)

    @cached_property
    def hf_flax(self):
        """transformers' FlaxCLIPModel without params (_do_init=False): they are ``hf_flax_params``."""
        return transformers.FlaxCLIPModel(self.hf_config, _do_init=False)

    @cached_property
    def hf_flax_params(self):
        """The PyTorch weights converted by transformers' own converter (its from_pt path, which fails
        with _do_init=False; a random init first would cost seconds of op-by-op dispatch)."""
        from types import SimpleNamespace

        from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

        model = self.hf_flax
        shapes = SimpleNamespace(base_model_prefix=model.base_model_prefix, params=model.params_shape_tree)
        return convert_pytorch_state_dict_to_flax(
            {k: v.clone() for k, v in self.hf_torch.state_dict().items()}, shapes
        )

    @cached_property
    def flax_model(self):
        from clip_flax import FlaxCLIPModel

        return FlaxCLIPModel.from_pretrained(self.pt)


# ---------------------------------------------------------------------------------------------
# Loading (every keyword of transformers' from_pretrained), PyTorch


def torch_logits(model, ctx):
    with torch.no_grad():
        return model(**ctx.pt_inputs()).logits_per_image.float().numpy()


def load_both(ctx, name, *args, **kwargs):
    """(ours, theirs) from the same folder with the same arguments."""
    from clip_torch import modeling

    ours = getattr(modeling, name).from_pretrained(*args, **kwargs)
    return ours, getattr(transformers, name).from_pretrained(*args, **kwargs)


@idiom("load", "loading", "torch", "CLIPModel.from_pretrained(folder)  # model.safetensors by transformers")
def _(ctx):
    close(torch_logits(ctx.torch_model, ctx), ctx.logits(), "logits")
    assert not ctx.torch_model.training and not ctx.hf_torch.training


@idiom("load-pretrained-keyword", "loading", "torch", "from_pretrained(pretrained_model_name_or_path=folder)")
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", pretrained_model_name_or_path=ctx.pt)
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits")


@idiom("load-bin", "loading", "torch", "from_pretrained(folder with pytorch_model.bin)")
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.bin)
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits")


@idiom("from_tf", "loading", "torch", "CLIPModel.from_pretrained(tf_folder, from_tf=True)", "ours only")
def _(ctx):
    # transformers 4.57.6 fails here ("Tensor on device cpu is not on the expected device meta").
    from clip_torch import CLIPModel

    close(torch_logits(CLIPModel.from_pretrained(ctx.tf_folder, from_tf=True), ctx), ctx.logits(), "logits")


@idiom("from_flax", "loading", "torch", "CLIPModel.from_pretrained(flax_folder, from_flax=True)", "ours only")
def _(ctx):
    # transformers 4.57.6 loads it but leaves parameters on the meta device: its forward then fails.
    from clip_torch import CLIPModel

    close(
        torch_logits(CLIPModel.from_pretrained(ctx.flax_folder, from_flax=True), ctx), ctx.logits(), "logits"
    )


@idiom(
    "torch_dtype", "loading", "torch", "from_pretrained(folder, torch_dtype=torch.bfloat16) / dtype='float16'"
)
def _(ctx):
    for kwargs in (dict(torch_dtype=torch.bfloat16), dict(dtype="float16"), dict(dtype=torch.bfloat16)):
        ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, **kwargs)
        assert ours.dtype == theirs.dtype, kwargs
        close(torch_logits(ours, ctx), torch_logits(theirs, ctx), f"logits {kwargs}", atol=0.1)


@idiom(
    "dtype-auto", "loading", "torch", 'from_pretrained(folder, torch_dtype="auto")  # config.json\'s dtype'
)
def _(ctx):
    folder = ctx.folder("fp16")
    transformers.CLIPModel.from_pretrained(ctx.pt, dtype=torch.float16).save_pretrained(folder)
    for path in (ctx.pt, str(folder)):
        ours, theirs = load_both(ctx, "CLIPModel", path, torch_dtype="auto")
        assert ours.dtype == theirs.dtype, path
        assert f"torch.{ours.config.dtype}" == str(theirs.config.dtype), path  # the config records it


@idiom(
    "attn_implementation", "loading", "torch", 'from_pretrained(folder, attn_implementation="eager" | "sdpa")'
)
def _(ctx):
    for attn in ("sdpa", "eager"):
        ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, attn_implementation=attn)
        close(torch_logits(ours, ctx), torch_logits(theirs, ctx), f"logits {attn}")
    with torch.no_grad():  # attention maps (eager)
        a = ours(**ctx.pt_inputs(), output_attentions=True).vision_model_output.attentions
        b = theirs(**ctx.pt_inputs(), output_attentions=True).vision_model_output.attentions
    close(a[-1], b[-1], "attention maps")


@idiom(
    "attn-flash",
    "loading",
    "torch",
    'from_pretrained(folder, attn_implementation="flash_attention_2")',
    "clear error",
)
def _(ctx):
    from clip_torch import CLIPModel

    with pytest.raises(ValueError, match='"eager" or "sdpa"'):
        CLIPModel.from_pretrained(ctx.pt, attn_implementation="flash_attention_2")


@idiom(
    "file-options",
    "loading",
    "torch",
    "from_pretrained(folder, local_files_only=True, use_safetensors=True, low_cpu_mem_usage=True)",
)
def _(ctx):
    kwargs = dict(local_files_only=True, use_safetensors=True, low_cpu_mem_usage=True)
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, **kwargs)
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits")
    ours, theirs = load_both(ctx, "CLIPModel", ctx.bin, use_safetensors=False)
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits from pytorch_model.bin")
    from clip_torch import CLIPModel

    with pytest.raises(OSError):  # no model.safetensors there: both refuse
        transformers.CLIPModel.from_pretrained(ctx.bin, use_safetensors=True)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        CLIPModel.from_pretrained(ctx.bin, use_safetensors=True)


@idiom("variant", "loading", "torch", 'from_pretrained(folder, variant="fp16")  # model.fp16.safetensors')
def _(ctx):
    folder = ctx.folder("variant")
    ctx.hf_torch.save_pretrained(folder, variant="fp16")
    ours, theirs = load_both(ctx, "CLIPModel", str(folder), variant="fp16")
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits")


@idiom(
    "hub-revision-cache_dir",
    "loading",
    "torch",
    'from_pretrained("org/tiny-clip", revision="v1", cache_dir=..., local_files_only=True)',
)
def _(ctx):
    kwargs = dict(revision="v1", cache_dir=ctx.hub_cache, local_files_only=True)
    ours, theirs = load_both(ctx, "CLIPModel", "org/tiny-clip", **kwargs)
    close(torch_logits(ours, ctx), torch_logits(theirs, ctx), "logits")
    from clip_torch import CLIPModel

    with pytest.raises(FileNotFoundError):
        CLIPModel.from_pretrained("org/not-cached", cache_dir=ctx.hub_cache, local_files_only=True)


@idiom(
    "subfolder",
    "loading",
    "torch",
    'CLIPTextModel.from_pretrained(sd_repo, subfolder="text_encoder")  # local or Hub id',
)
def _(ctx):
    ids = ctx.pt_inputs(input_ids=1)
    for source, kwargs in (
        (ctx.stable_diffusion, {}),
        ("org/tiny-clip", dict(cache_dir=ctx.hub_cache, local_files_only=True)),
    ):
        ours, theirs = load_both(ctx, "CLIPTextModel", source, subfolder="text_encoder", **kwargs)
        with torch.no_grad():
            close(ours(**ids).pooler_output, theirs(**ids).pooler_output, f"pooler_output from {source}")
    ours = CLIPTokenizer.from_pretrained(ctx.stable_diffusion, subfolder="tokenizer")
    theirs = transformers.CLIPTokenizer.from_pretrained(ctx.stable_diffusion, subfolder="tokenizer")
    assert ours(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]


@idiom(
    "config-overrides",
    "loading",
    "torch",
    "from_pretrained(folder, output_hidden_states=True, return_dict=False)",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, output_hidden_states=True, return_dict=False)
    assert ours.config.output_hidden_states and ours.config.return_dict is False
    with torch.no_grad():
        a, b = ours(**ctx.pt_inputs()), theirs(**ctx.pt_inputs())
    assert isinstance(a, tuple) and len(a) == len(b)
    for x, y in zip(a[-2][2], b[-2][2]):  # text_model_output.hidden_states
        close(x, y, "hidden_states")


@idiom(
    "config-override-projection_dim",
    "loading",
    "torch",
    "CLIPTextModelWithProjection.from_pretrained(folder, projection_dim=16)",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPTextModelWithProjection", ctx.pt, projection_dim=16)
    assert ours.config.projection_dim == theirs.config.projection_dim == 16
    with torch.no_grad():
        ids = ctx.pt_inputs(input_ids=1)
        close(ours(**ids).text_embeds, theirs(**ids).text_embeds, "text_embeds")
    from clip_torch import CLIPTextModelWithProjection

    with pytest.raises(RuntimeError):  # another size than the checkpoint's: both refuse
        transformers.CLIPTextModelWithProjection.from_pretrained(ctx.pt, projection_dim=8)
    with pytest.raises(ValueError, match="text_projection.weight"):
        CLIPTextModelWithProjection.from_pretrained(ctx.pt, projection_dim=8)


@idiom(
    "config-object",
    "loading",
    "torch",
    "from_pretrained(folder, config=transformers.CLIPConfig.from_pretrained(folder, output_attentions=True))",
)
def _(ctx):
    config = transformers.CLIPConfig.from_pretrained(ctx.pt, output_attentions=True)
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, config=config)
    with torch.no_grad():
        a, b = ours(**ctx.pt_inputs()), theirs(**ctx.pt_inputs())
    close(a.logits_per_image, b.logits_per_image, "logits")
    assert len(a.text_model_output.attentions) == len(b.text_model_output.attentions) == 2


@idiom(
    "output_loading_info",
    "loading",
    "torch",
    "model, info = CLIPTextModel.from_pretrained(folder, output_loading_info=True)",
)
def _(ctx):
    for name in ("CLIPModel", "CLIPTextModel", "CLIPVisionModelWithProjection"):
        (_, ours), (_, theirs) = load_both(ctx, name, ctx.pt, output_loading_info=True)
        assert ours == {k: list(v) for k, v in theirs.items()}, name


@idiom("device_map", "loading", "torch", 'from_pretrained(folder, device_map="cpu")', "ours only")
def _(ctx):
    # transformers needs the accelerate package for any device_map (not installed here).
    from clip_torch import CLIPModel

    for device_map in ("cpu", {"": "cpu"}, "auto"):
        model = CLIPModel.from_pretrained(ctx.pt, device_map=device_map)
        assert model.device.type == ("cuda" if device_map == "auto" and torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="one device"):
        CLIPModel.from_pretrained(ctx.pt, device_map={"text_model": "cpu", "vision_model": "cpu"})


@idiom("quantization", "loading", "torch", "from_pretrained(folder, load_in_8bit=True)", "clear error")
def _(ctx):
    from clip_torch import CLIPModel

    with pytest.raises(ValueError, match="quantization is not supported"):
        CLIPModel.from_pretrained(ctx.pt, load_in_8bit=True)


# ---------------------------------------------------------------------------------------------
# Configs (framework-free: every backend reads them)


@idiom(
    "config-extra-fields",
    "configs",
    "core",
    "config.json's dtype / architectures / id2label / custom keys kept and written back",
)
def _(ctx):
    folder = ctx.folder("config-extra")
    config = transformers.CLIPConfig.from_pretrained(ctx.pt, id2label={0: "cat", 1: "dog"})
    config.torch_dtype, config.my_key = "float16", [1, 2]
    config.save_pretrained(folder)
    theirs_json = json.loads((folder / "config.json").read_text())
    ours = CLIPConfig.from_pretrained(folder)
    assert ours.id2label == config.id2label and ours.architectures == config.architectures
    assert ours.torch_dtype == ours.dtype == "float16" and ours.my_key == [1, 2]
    ours.save_pretrained(folder / "ours")
    ours_json = json.loads((folder / "ours" / "config.json").read_text())
    for key, value in theirs_json.items():
        if not isinstance(value, dict) or key == "id2label":
            assert ours_json[key] == value, key
    again = transformers.CLIPConfig.from_pretrained(folder / "ours")
    assert (
        again.id2label == config.id2label and again.my_key == [1, 2] and str(again.dtype) == "torch.float16"
    )


@idiom(
    "config-kwargs",
    "configs",
    "core",
    "CLIPConfig.from_pretrained(pretrained_model_name_or_path=..., projection_dim=8, foo=1, return_unused_kwargs=True)",
)
def _(ctx):
    kwargs = dict(pretrained_model_name_or_path=ctx.pt, projection_dim=8, output_attentions=True, foo=1)
    ours, ours_unused = CLIPConfig.from_pretrained(return_unused_kwargs=True, **kwargs)
    theirs, theirs_unused = transformers.CLIPConfig.from_pretrained(return_unused_kwargs=True, **kwargs)
    assert ours_unused == theirs_unused == {"foo": 1}
    assert (ours.projection_dim, ours.output_attentions) == (theirs.projection_dim, theirs.output_attentions)
    with pytest.raises(TypeError, match="foo"):  # transformers drops it silently; ours refuses
        CLIPConfig.from_pretrained(ctx.pt, foo=1)


@idiom(
    "config-update",
    "configs",
    "core",
    "config.update({...}); config.update_from_string('projection_dim=8,return_dict=false')",
)
def _(ctx):
    ours, theirs = CLIPConfig.from_pretrained(ctx.pt), transformers.CLIPConfig.from_pretrained(ctx.pt)
    for config in (ours, theirs):
        config.update({"logit_scale_init_value": 1.5, "output_hidden_states": True})
        config.update_from_string("projection_dim=8,return_dict=false")
    for name in (
        "logit_scale_init_value",
        "output_hidden_states",
        "projection_dim",
        "return_dict",
        "use_return_dict",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name


@idiom(
    "config-to_dict",
    "configs",
    "core",
    "model.config.to_dict(); config.text_config.hidden_size; config.num_labels",
)
def _(ctx):
    ours, theirs = CLIPConfig.from_pretrained(ctx.pt), transformers.CLIPConfig.from_pretrained(ctx.pt)
    ours_dict, theirs_dict = ours.to_dict(), theirs.to_dict()
    for key in (
        "projection_dim",
        "logit_scale_init_value",
        "model_type",
        "return_dict",
        "output_hidden_states",
    ):
        assert ours_dict[key] == theirs_dict[key], key
    for tower in ("text_config", "vision_config"):
        for key, value in ours_dict[tower].items():
            if key in theirs_dict[tower] and key not in ("dtype", "transformers_version"):
                assert theirs_dict[tower][key] == value, f"{tower}.{key}"
    assert ours.text_config.hidden_size == theirs.text_config.hidden_size
    assert (ours.num_labels, ours.id2label, ours.is_encoder_decoder) == (
        theirs.num_labels,
        theirs.id2label,
        False,
    )


@idiom("config-tower", "configs", "core", "CLIPTextConfig.from_pretrained(clip_folder); CLIPVisionConfig...")
def _(ctx):
    ours, theirs = CLIPTextConfig.from_pretrained(ctx.pt), transformers.CLIPTextConfig.from_pretrained(ctx.pt)
    for name in (
        "hidden_size",
        "num_hidden_layers",
        "max_position_embeddings",
        "eos_token_id",
        "projection_dim",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name


@idiom(
    "config-transformers-object",
    "configs",
    "core",
    "CLIPModel(transformers.CLIPConfig(...)) / TFCLIPModel / FlaxCLIPModel",
)
def _(ctx):
    from clip_torch import CLIPModel

    model = CLIPModel(ctx.hf_config)
    assert model.config.projection_dim == ctx.hf_config.projection_dim
    assert model.num_parameters() == ctx.hf_torch.num_parameters()


@idiom(
    "config-to-transformers",
    "configs",
    "core",
    "transformers.CLIPModel(our_config.to_transformers())",
    "ours only",
)
def _(ctx):
    # transformers' models accept only their own PretrainedConfig: ours converts itself.
    config = CLIPConfig.from_pretrained(ctx.pt)
    model = transformers.CLIPModel(config.to_transformers())
    assert model.num_parameters() == ctx.hf_torch.num_parameters()
    assert model.config.to_diff_dict()["projection_dim"] == config.projection_dim


@idiom(
    "config-flags-torch",
    "configs",
    "torch",
    "model.config.output_hidden_states = True; model.config.return_dict = False",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt, attn_implementation="eager")
    for model in (ours, theirs):
        model.config.output_hidden_states = True
        model.config.output_attentions = True
    with torch.no_grad():
        a, b = ours(**ctx.pt_inputs()), theirs(**ctx.pt_inputs())
    assert len(a.vision_model_output.hidden_states) == len(b.vision_model_output.hidden_states)
    assert len(a.text_model_output.attentions) == len(b.text_model_output.attentions)
    for model in (ours, theirs):
        model.config.return_dict = False
    with torch.no_grad():
        a, b = ours(**ctx.pt_inputs()), theirs(**ctx.pt_inputs())
    assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)


# ---------------------------------------------------------------------------------------------
# Saving


@idiom(
    "save-safe_serialization",
    "saving",
    "torch",
    "model.save_pretrained(dir, safe_serialization=False); transformers loads it",
)
def _(ctx):
    folder = ctx.folder("saved-bin")
    written = ctx.torch_model.save_pretrained(folder, safe_serialization=False)
    assert sorted(os.path.basename(p) for p in written) == ["config.json", "pytorch_model.bin"]
    theirs = transformers.CLIPModel.from_pretrained(folder)
    close(torch_logits(theirs, ctx), ctx.logits(), "logits")
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["CLIPModel"]


@idiom("save-max_shard_size", "saving", "torch", 'model.save_pretrained(dir, max_shard_size="200KB")')
def _(ctx):
    ours, theirs = ctx.folder("shards-ours"), ctx.folder("shards-theirs")
    ctx.torch_model.save_pretrained(ours, max_shard_size="200KB")
    ctx.hf_torch.save_pretrained(theirs, max_shard_size="200KB")
    assert "model.safetensors.index.json" in os.listdir(ours)
    from clip_torch import CLIPModel

    close(
        torch_logits(transformers.CLIPModel.from_pretrained(ours), ctx), ctx.logits(), "transformers on ours"
    )
    close(torch_logits(CLIPModel.from_pretrained(theirs), ctx), ctx.logits(), "ours on transformers'")


@idiom("save-round-trip", "saving", "torch", "model.save_pretrained(dir); CLIPModel.from_pretrained(dir)")
def _(ctx):
    from clip_torch import CLIPTextModelWithProjection

    folder = ctx.folder("round-trip")
    model = CLIPTextModelWithProjection.from_pretrained(ctx.pt, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    ours = CLIPTextModelWithProjection.from_pretrained(folder, torch_dtype="auto")
    theirs = transformers.CLIPTextModelWithProjection.from_pretrained(folder, torch_dtype="auto")
    assert ours.dtype == theirs.dtype == torch.bfloat16
    ours, theirs = load_both(ctx, "CLIPTextModelWithProjection", str(folder))  # the bf16 weights in fp32
    ids = ctx.pt_inputs(input_ids=1)
    with torch.no_grad():
        close(ours(**ids).text_embeds, theirs(**ids).text_embeds, "text_embeds")


# ---------------------------------------------------------------------------------------------
# PyTorch model API


@idiom(
    "num_parameters",
    "torch API",
    "torch",
    "model.num_parameters(); num_parameters(exclude_embeddings=True, only_trainable=True)",
)
def _(ctx):
    for name in ("CLIPModel", "CLIPTextModel", "CLIPVisionModelWithProjection"):
        ours, theirs = load_both(ctx, name, ctx.pt)
        ours.text_model.requires_grad_(False) if hasattr(ours, "text_model") else None
        theirs.text_model.requires_grad_(False) if hasattr(theirs, "text_model") else None
        for kwargs in ({}, dict(exclude_embeddings=True), dict(only_trainable=True)):
            assert ours.num_parameters(**kwargs) == theirs.num_parameters(**kwargs), (name, kwargs)


@idiom(
    "state_dict",
    "torch API",
    "torch",
    "model.load_state_dict(other.state_dict()); model.get_memory_footprint()",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    fresh = transformers.CLIPModel(ctx.hf_config).eval()
    fresh.load_state_dict(ours.state_dict())
    close(torch_logits(fresh, ctx), ctx.logits(), "transformers' model with our state_dict")
    ours.load_state_dict(transformers.CLIPModel(ctx.hf_config).state_dict())
    ours.load_state_dict(theirs.state_dict())
    close(torch_logits(ours, ctx), ctx.logits(), "our model with transformers' state_dict")
    # transformers also counts its position_ids buffers; ours makes positions on the fly.
    assert ours.get_memory_footprint(return_buffers=False) == theirs.get_memory_footprint(
        return_buffers=False
    )


@idiom(
    "input_embeddings",
    "torch API",
    "torch",
    "model.get_input_embeddings(); model.set_input_embeddings(nn.Embedding(...))",
)
def _(ctx):
    for name in ("CLIPTextModel", "CLIPVisionModel"):
        ours, theirs = load_both(ctx, name, ctx.pt)
        a, b = ours.get_input_embeddings(), theirs.get_input_embeddings()
        assert type(a) is type(b)
        close(a.weight.detach(), b.weight.detach(), f"{name} input embeddings")
        assert ours.get_output_embeddings() is None and theirs.get_output_embeddings() is None
    new = torch.nn.Embedding(49408, 32)
    text = load_both(ctx, "CLIPTextModel", ctx.pt)[0]
    text.set_input_embeddings(new)
    assert text.get_input_embeddings() is new and text.text_model.embeddings.token_embedding is new


@idiom("input_embeddings-CLIPModel", "torch API", "torch", "clip_model.get_input_embeddings()", "ours only")
def _(ctx):
    # transformers' CLIPModel raises NotImplementedError; ours returns the text token embedding.
    assert ctx.torch_model.get_input_embeddings() is ctx.torch_model.text_model.embeddings.token_embedding


@idiom(
    "resize_token_embeddings",
    "torch API",
    "torch",
    "tokenizer.add_tokens([...]); text_encoder.resize_token_embeddings(len(tokenizer))",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPTextModel", ctx.pt)
    old = theirs.get_input_embeddings().weight.detach().clone()
    for model in (ours, theirs):
        model.resize_token_embeddings(49410)
    a, b = ours.get_input_embeddings().weight.detach(), theirs.get_input_embeddings().weight.detach()
    assert a.shape == b.shape == (49410, 32)
    close(a[:49408], old, "kept rows")
    close(a[49408:], old.mean(0).expand(2, -1), "new rows at the old mean", atol=1e-6)
    close(b[49408:], old.mean(0).expand(2, -1), "transformers' new rows near the old mean", atol=0.05)
    assert ours.config.vocab_size == theirs.config.vocab_size == 49410


@idiom(
    "from_config",
    "torch API",
    "torch",
    "CLIPModel.from_config(config, torch_dtype=torch.float16); CLIPModel(config)",
)
def _(ctx):
    from clip_torch import CLIPModel

    ours = CLIPModel.from_config(ctx.hf_config, torch_dtype=torch.float16)
    theirs = transformers.CLIPModel._from_config(ctx.hf_config, torch_dtype=torch.float16)
    assert ours.dtype == theirs.dtype == torch.float16
    assert ours.num_parameters() == theirs.num_parameters()
    assert CLIPModel.from_config(CLIPConfig.from_pretrained(ctx.pt)).num_parameters() == ours.num_parameters()


@idiom("tie_weights-can_generate", "torch API", "torch", "model.tie_weights(); model.can_generate()")
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    assert ours.tie_weights() is None and theirs.tie_weights() is None
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())
    assert ours.can_generate() is theirs.can_generate() is False


@idiom(
    "module-api",
    "torch API",
    "torch",
    'model.eval() / train() / to("cpu") / half() / float(); model.device, model.dtype',
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt)
    for model in (ours, theirs):
        model.train().eval().to("cpu").half()
    assert (ours.device, ours.dtype, ours.training) == (theirs.device, theirs.dtype, theirs.training)
    with torch.no_grad():
        inputs = ctx.pt_inputs()
        inputs["pixel_values"] = inputs["pixel_values"].half()
        close(
            ours(**inputs).logits_per_image.float(),
            theirs(**inputs).logits_per_image.float(),
            "fp16",
            atol=0.05,
        )
    assert ours.float().dtype == torch.float32
    assert (ours.main_input_name, ours.name_or_path, ours.framework) == (
        theirs.main_input_name,
        theirs.name_or_path,
        theirs.framework,
    )


@idiom(
    "outputs",
    "torch API",
    "torch",
    'out.pooler_output; out[0]; out["logits_per_image"]; out.to_tuple(); out.keys()',
)
def _(ctx):
    with torch.no_grad():
        a, b = ctx.torch_model(**ctx.pt_inputs(), return_loss=True), ctx.reference
        b = ctx.hf_torch(**ctx.pt_inputs(), return_loss=True)
    assert list(a.keys()) == list(b.keys())
    close(a[0], b[0], "out[0] (the loss)")
    close(a["logits_per_image"], b["logits_per_image"], "out['logits_per_image']")
    close(a.text_model_output.pooler_output, b.text_model_output.pooler_output, "pooler_output")
    assert len(a.to_tuple()) == len(b.to_tuple()) and len(a.to_tuple()[-1]) == len(b.to_tuple()[-1])
    close(a.to_tuple()[-1][1], b.to_tuple()[-1][1], "to_tuple()[-1][1] (vision pooler_output)")
    text = load_both(ctx, "CLIPTextModel", ctx.pt)
    with torch.no_grad():
        outs = [m(**ctx.pt_inputs(input_ids=1, attention_mask=1)) for m in text]
    close(outs[0].pooler_output, outs[1].pooler_output, "CLIPTextModel pooler_output")
    close(outs[0][1], outs[1][1], "CLIPTextModel out[1]")


@idiom(
    "features",
    "torch API",
    "torch",
    'model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")); get_image_features(pixel_values=...)',
)
def _(ctx):
    tokenizer = CLIPTokenizerFast.from_pretrained(ctx.pt)
    ids = tokenizer(TEXTS, padding=True, return_tensors="pt")
    pixels = CLIPImageProcessor.from_pretrained(ctx.pt)(ctx.images, return_tensors="pt").pixel_values
    with torch.no_grad():
        close(
            ctx.torch_model.get_text_features(**ids), ctx.hf_torch.get_text_features(**ids), "text features"
        )
        close(
            ctx.torch_model.get_image_features(pixel_values=pixels),
            ctx.hf_torch.get_image_features(pixel_values=pixels),
            "image features",
        )


@idiom(
    "gradient_checkpointing",
    "torch API",
    "torch",
    "model.gradient_checkpointing_enable(); model.is_gradient_checkpointing",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPModel", ctx.pt)
    for model in (ours, theirs):
        model.gradient_checkpointing_enable()
        model.train()
    assert ours.is_gradient_checkpointing and theirs.is_gradient_checkpointing
    losses = [m(**ctx.pt_inputs(), return_loss=True).loss for m in (ours, theirs)]
    close(losses[0].detach(), losses[1].detach(), "training loss with checkpointing")
    losses[0].backward()  # gradients against transformers': tests/test_torch_modeling.py


@idiom(
    "trainer-hooks",
    "torch API",
    "torch",
    "model.requires_grad_(False); model.enable_input_require_grads(); supports_gradient_checkpointing; "
    "warnings_issued",
)
def _(ctx):
    ours, theirs = load_both(ctx, "CLIPTextModel", ctx.pt)
    ids = ctx.pt_inputs()["input_ids"]
    for model in (ours, theirs):  # frozen embeddings, as under adapters with gradient checkpointing
        model.requires_grad_(False)
        assert not model(ids).last_hidden_state.requires_grad
        model.enable_input_require_grads()
    assert ours(ids).last_hidden_state.requires_grad and theirs(ids).last_hidden_state.requires_grad
    for model in (ours, theirs):
        model.disable_input_require_grads()
    assert not ours(ids).last_hidden_state.requires_grad and not theirs(ids).last_hidden_state.requires_grad
    for attr in ("supports_gradient_checkpointing", "is_parallelizable", "warnings_issued"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr


@idiom("push_to_hub", "saving", "torch", 'model.push_to_hub("org/name")', "clear error")
def _(ctx):
    # transformers uploads; here an error names the way to do it (transformers itself needs the network).
    with pytest.raises(NotImplementedError, match="upload_folder"):
        ctx.torch_model.push_to_hub("org/name")
    with pytest.raises(ValueError, match="upload_folder"):
        ctx.torch_model.save_pretrained(ctx.folder("not-pushed"), push_to_hub=True)


# ---------------------------------------------------------------------------------------------
# TensorFlow


def tf_logits(model, inputs):
    return np.asarray(model(**inputs).logits_per_image)


@idiom("tf-load", "loading", "tf", "TFCLIPModel.from_pretrained(folder, from_pt=True)  # and tf_model.h5")
def _(ctx):
    from clip_tf import TFCLIPModel

    theirs = tf_logits(ctx.hf_tf, ctx.inputs)
    close(
        tf_logits(TFCLIPModel.from_pretrained(ctx.bin, from_pt=True), ctx.inputs),
        theirs,
        "from pytorch_model.bin",
    )
    close(
        tf_logits(TFCLIPModel.from_pretrained(ctx.tf_folder), ctx.inputs),
        theirs,
        "from transformers' tf_model.h5",
    )
    close(tf_logits(ctx.tf_model, ctx.inputs), ctx.logits(), "from model.safetensors")


@idiom(
    "tf-load-safetensors",
    "loading",
    "tf",
    "TFCLIPModel.from_pretrained(folder with model.safetensors)",
    "ours only",
)
def _(ctx):
    # transformers 4.57.6's TF loader fails on safetensors files (safetensors 0.8's safe_open).
    close(tf_logits(ctx.tf_model, ctx.inputs), ctx.logits(), "logits")


@idiom(
    "tf-dtype-and-overrides",
    "loading",
    "tf",
    'TFCLIPModel.from_pretrained(folder, torch_dtype="auto", output_hidden_states=True, attn_implementation="eager", subfolder=...)',
)
def _(ctx):
    from clip_tf import TFCLIPModel, TFCLIPTextModel

    model = TFCLIPModel.from_pretrained(
        ctx.pt, torch_dtype="auto", output_hidden_states=True, attn_implementation="eager"
    )
    out = model(**ctx.inputs)
    assert model.dtype_policy.name == "float32" and len(out.text_model_output.hidden_states) == 3
    theirs = ctx.hf_tf(**ctx.inputs, output_hidden_states=True)
    close(
        out.text_model_output.hidden_states[-1], theirs.text_model_output.hidden_states[-1], "hidden_states"
    )
    bf16 = TFCLIPTextModel.from_pretrained(ctx.stable_diffusion, subfolder="text_encoder", dtype="bfloat16")
    assert bf16.dtype_policy.name == "bfloat16"


@idiom(
    "tf-dict-positional",
    "TF API",
    "tf",
    'model(processor(text=..., images=..., return_tensors="tf", padding=True))  # one dict',
)
def _(ctx):
    processor = CLIPProcessor.from_pretrained(ctx.pt)
    inputs = processor(text=TEXTS, images=ctx.images, return_tensors="tf", padding=True)
    assert inputs["input_ids"].dtype.name == "int32"  # as transformers' processor gives
    theirs = transformers.CLIPProcessor.from_pretrained(ctx.pt)(
        text=TEXTS, images=ctx.images, return_tensors="tf", padding=True
    )
    assert theirs["input_ids"].dtype.name == "int32"
    close(ctx.tf_model(inputs).logits_per_image, ctx.hf_tf(theirs).logits_per_image, "logits")


@idiom(
    "tf-from_config",
    "TF API",
    "tf",
    "TFCLIPModel.from_config(model.config) / from_config(model.get_config())",
)
def _(ctx):
    from clip_tf import TFCLIPModel

    for config in (ctx.tf_model.config, ctx.tf_model.get_config(), ctx.hf_tf.config, ctx.hf_tf.get_config()):
        model = TFCLIPModel.from_config(config)
        assert model.num_parameters() == ctx.hf_torch.num_parameters()
        assert model.config.projection_dim == ctx.hf_tf.config.projection_dim
    counts = [m.num_parameters(exclude_embeddings=True) for m in (model, ctx.hf_torch)]
    assert counts[0] == counts[1]  # transformers' TF classes have no num_parameters: its PyTorch count


@idiom(
    "tf-saved_model",
    "TF API",
    "tf",
    "tf.saved_model.save(model, dir); model.save_pretrained(dir, saved_model=True); signatures['serving_default'](...)",
    "ours only",
)
def _(ctx):
    # transformers' TFCLIPModel cannot export its nested output (see its serving_output TODO).
    import tensorflow as tf

    folder = str(ctx.folder("saved-model"))
    tf.saved_model.save(ctx.tf_model, folder)
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    ints = {
        k: tf.constant(v.astype(np.int32)) if k != "pixel_values" else tf.constant(v)
        for k, v in ctx.inputs.items()
    }
    close(serve(**ints)["logits_per_image"], ctx.logits(), "served logits")
    written = ctx.tf_model.save_pretrained(ctx.folder("tf-with-saved-model"), saved_model=True)
    assert {os.path.basename(p) for p in written} == {"tf_model.h5", "config.json", "1"}
    serve = tf.saved_model.load(written[-1]).signatures["int64_serving"]
    close(
        serve(**{k: tf.constant(v) for k, v in ctx.inputs.items()})["logits_per_image"], ctx.logits(), "int64"
    )


@idiom(
    "tf-save-default-h5",
    "saving",
    "tf",
    "model.save_pretrained(dir)  # tf_model.h5: transformers' TFCLIPModel reads it",
)
def _(ctx):
    folder = ctx.folder("tf-saved")
    written = ctx.tf_model.save_pretrained(folder)
    assert {os.path.basename(p) for p in written} == {"tf_model.h5", "config.json"}
    close(
        tf_logits(transformers.TFCLIPModel.from_pretrained(folder), ctx.inputs),
        ctx.logits(),
        "transformers' TF",
    )


@idiom(
    "tf-input_embeddings",
    "TF API",
    "tf",
    "text_model.get_input_embeddings(); set_input_embeddings(table); model.base_model_prefix",
)
def _(ctx):
    import tensorflow as tf

    from clip_tf import TFCLIPTextModel

    ours = TFCLIPTextModel.from_pretrained(ctx.pt)
    theirs = transformers.TFCLIPTextModel.from_pretrained(ctx.bin, from_pt=True)
    table = ours.get_input_embeddings().embeddings.numpy()
    np.testing.assert_array_equal(table, theirs.get_input_embeddings().weight.numpy())
    ids = ctx.inputs["input_ids"]
    ours.set_input_embeddings(table[::-1] * 2)  # a new table of the same shape
    theirs.set_input_embeddings(tf.Variable(table[::-1] * 2))
    close(ours(input_ids=ids).pooler_output, theirs(input_ids=ids).pooler_output, "pooler with the new table")
    assert ctx.tf_model.base_model_prefix == ctx.hf_tf.base_model_prefix


@idiom(
    "tf-config-flags",
    "configs",
    "tf",
    "model.config.return_dict = False; model.config.output_attentions = True",
)
def _(ctx):
    from clip_tf import TFCLIPTextModel

    ours = TFCLIPTextModel.from_pretrained(ctx.pt)
    theirs = transformers.TFCLIPTextModel.from_pretrained(ctx.tf_folder)
    for model in (ours, theirs):
        model.config.output_attentions = True
        model.config.return_dict = False
    ids = {"input_ids": ctx.inputs["input_ids"], "attention_mask": ctx.inputs["attention_mask"]}
    a, b = ours(**ids), theirs(**ids)
    assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 3
    close(a[2][-1], b[2][-1], "attention maps")


@idiom(
    "tf-keras-optimizer",
    "TF API",
    "tf",
    "model.compile(optimizer=tf.keras.optimizers.Adam())  # tf-keras",
    "clear error",
)
def _(ctx):
    import tf_keras

    with pytest.raises(TypeError, match="keras.optimizers.Adam"):
        ctx.tf_model.compile(optimizer=tf_keras.optimizers.Adam())


# ---------------------------------------------------------------------------------------------
# JAX / Flax


def flax_logits(model, inputs, **kwargs):
    return np.asarray(model(**inputs, **kwargs).logits_per_image)


@idiom(
    "flax-load",
    "loading",
    "flax",
    "FlaxCLIPModel.from_pretrained(folder)  # any format, from_pt=True accepted",
)
def _(ctx):
    from clip_flax import FlaxCLIPModel

    close(
        flax_logits(ctx.flax_model, ctx.inputs),
        flax_logits(ctx.hf_flax, ctx.inputs, params=ctx.hf_flax_params),
        "from model.safetensors",
    )
    close(
        flax_logits(FlaxCLIPModel.from_pretrained(ctx.flax_folder), ctx.inputs), ctx.logits(), "from msgpack"
    )
    close(
        flax_logits(FlaxCLIPModel.from_pretrained(ctx.bin, from_pt=True), ctx.inputs),
        ctx.logits(),
        "from .bin",
    )


@idiom("flax-dtype-positional", "loading", "flax", "FlaxCLIPModel.from_pretrained(folder, jnp.bfloat16)")
def _(ctx):
    import jax
    import jax.numpy as jnp

    from clip_flax import FlaxCLIPModel

    # The dtype is the compute dtype; params stay float32 (to_bf16 casts them), as in transformers.
    # bf16 numbers are compared with fp32 in tests/test_flax_modeling.py.
    ours, ours_params = FlaxCLIPModel.from_pretrained(ctx.flax_folder, jnp.bfloat16, _do_init=False)
    theirs, theirs_params = transformers.FlaxCLIPModel.from_pretrained(
        ctx.flax_folder, jnp.bfloat16, _do_init=False
    )
    assert ours.dtype == theirs.dtype == jnp.bfloat16
    dtypes = [
        {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(p)} for p in (ours_params, theirs_params)
    ]
    assert dtypes[0] == dtypes[1] == {"float32"}


@idiom(
    "flax-_do_init",
    "loading",
    "flax",
    "model, params = FlaxCLIPModel.from_pretrained(folder, _do_init=False)",
)
def _(ctx):
    import jax

    from clip_flax import FlaxCLIPModel

    ours, ours_params = FlaxCLIPModel.from_pretrained(ctx.flax_folder, _do_init=False)
    theirs, theirs_params = transformers.FlaxCLIPModel.from_pretrained(ctx.flax_folder, _do_init=False)
    assert jax.tree_util.tree_structure(ours_params) == jax.tree_util.tree_structure(theirs_params)
    for a, b in zip(jax.tree_util.tree_leaves(ours_params), jax.tree_util.tree_leaves(theirs_params)):
        np.testing.assert_array_equal(a, b)
    close(flax_logits(ours, ctx.inputs, params=ours_params), ctx.logits(), "logits with params=")
    with pytest.raises(ValueError, match="_do_init=False"):
        ours.params  # noqa: B018 - as transformers: the caller holds the params


@idiom(
    "flax-init_weights",
    "Flax API",
    "flax",
    "model.init_weights(rng, model.input_shape)  # (1, H, W, 3) pixels",
)
def _(ctx):
    import jax

    from clip_flax import FlaxCLIPVisionModel

    assert ctx.flax_model.input_shape == ctx.hf_flax.input_shape
    counts = [m.num_parameters(exclude_embeddings=True) for m in (ctx.flax_model, ctx.hf_torch)]
    assert counts[0] == counts[1]  # transformers' Flax classes have no num_parameters: its PyTorch count
    shapes = [
        jax.eval_shape(lambda rng, m=m: m.init_weights(rng, m.input_shape), jax.random.PRNGKey(0))
        for m in (ctx.flax_model, ctx.hf_flax)
    ]
    assert jax.tree_util.tree_map(lambda s: s.shape, shapes[0]) == jax.tree_util.tree_map(
        lambda s: s.shape, shapes[1]
    )
    vision_config = ctx.hf_config.vision_config
    ours = FlaxCLIPVisionModel(vision_config, _do_init=False)
    theirs = transformers.FlaxCLIPVisionModel(vision_config, _do_init=False)
    assert ours.input_shape == theirs.input_shape == (1, 32, 32, 3)
    # With params, only the missing entries are drawn (transformers' use after a partial load).
    scale = np.full((32,), 3.0, np.float32)
    partial = {"vision_model": {"post_layernorm": {"scale": scale}}}
    filled = ours.init_weights(jax.random.PRNGKey(0), ours.input_shape, params=partial)
    expected = jax.eval_shape(lambda rng: theirs.init_weights(rng, theirs.input_shape), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(filled) == jax.tree_util.tree_structure(expected)
    np.testing.assert_array_equal(filled["vision_model"]["post_layernorm"]["scale"], scale)


@idiom("flax-cast", "Flax API", "flax", "model.params = model.to_bf16(model.params, mask); to_fp16; to_fp32")
def _(ctx):
    import jax

    params = ctx.flax_model.params
    mask = jax.tree_util.tree_map(lambda leaf: leaf.ndim > 1, params)
    for method in ("to_bf16", "to_fp16", "to_fp32"):
        for m in (None, mask):
            ours = getattr(ctx.flax_model, method)(params, m)
            theirs = getattr(ctx.hf_flax, method)(ctx.hf_flax_params, m)
            dtypes = [jax.tree_util.tree_map(lambda leaf: str(leaf.dtype), tree) for tree in (ours, theirs)]
            assert dtypes[0] == dtypes[1], method


@idiom(
    "flax-module-apply",
    "Flax API",
    "flax",
    'model.module.apply({"params": params}, input_ids, pixels_nhwc, attention_mask, position_ids)',
)
def _(ctx):
    ids, mask = ctx.inputs["input_ids"], ctx.inputs["attention_mask"]
    pixels = ctx.inputs["pixel_values"].transpose(0, 2, 3, 1)  # the Linen modules take channels-last
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    ours = ctx.flax_model.module.apply({"params": ctx.flax_model.params}, ids, pixels, mask, positions)
    theirs = ctx.hf_flax.module.apply({"params": ctx.hf_flax_params}, ids, pixels, mask, positions)
    close(ours.logits_per_image, theirs.logits_per_image, "module logits")
    close(ours.vision_model_output.pooler_output, theirs.vision_model_output.pooler_output, "pooler_output")


@idiom(
    "flax-call",
    "Flax API",
    "flax",
    'model(**processor(..., return_tensors="np")); get_text_features(input_ids, params=...)',
)
def _(ctx):  # model(**inputs) itself: flax-load
    ids, mask = ctx.inputs["input_ids"], ctx.inputs["attention_mask"]
    ours = ctx.flax_model.get_text_features(ids, mask, params=ctx.flax_model.params)
    close(ours, ctx.hf_flax.get_text_features(ids, mask, params=ctx.hf_flax_params), "text features")
    pixels = ctx.inputs["pixel_values"]
    theirs = ctx.hf_flax.get_image_features(pixels, params=ctx.hf_flax_params)
    close(ctx.flax_model.get_image_features(pixels), theirs, "image features")


@idiom(
    "flax-save",
    "saving",
    "flax",
    "model.save_pretrained(dir, params=params, safe_serialization=False)  # msgpack",
)
def _(ctx):
    folder = ctx.folder("flax-saved")
    written = ctx.flax_model.save_pretrained(folder, params=ctx.flax_model.params, safe_serialization=False)
    assert {os.path.basename(p) for p in written} == {"flax_model.msgpack", "config.json"}
    close(
        flax_logits(transformers.FlaxCLIPModel.from_pretrained(folder), ctx.inputs),
        ctx.logits(),
        "transformers",
    )


@idiom("flax-config-flags", "configs", "flax", "model.config.output_hidden_states = True")
def _(ctx):
    from clip_flax import FlaxCLIPModel

    ours = FlaxCLIPModel.from_pretrained(ctx.flax_folder)
    ours.config.output_hidden_states = True
    ctx.hf_flax.config.output_hidden_states = True
    try:
        a, b = ours(**ctx.inputs), ctx.hf_flax(**ctx.inputs, params=ctx.hf_flax_params)
    finally:
        ctx.hf_flax.config.output_hidden_states = False
    assert len(a.vision_model_output.hidden_states) == len(b.vision_model_output.hidden_states) == 3
    close(a.vision_model_output.hidden_states[1], b.vision_model_output.hidden_states[1], "hidden_states")


# ---------------------------------------------------------------------------------------------
# Tokenizers (slow and fast: each against its transformers counterpart)


def same_encoding(ours, theirs, what):
    assert list(ours.keys()) == list(theirs.keys()), (what, list(ours.keys()), list(theirs.keys()))
    for key in theirs:
        a, b = ours[key], theirs[key]
        if hasattr(b, "dtype") or hasattr(a, "dtype"):
            assert str(a.dtype).replace("torch.", "") == str(b.dtype).replace("torch.", ""), (what, key)
            a, b = np.asarray(a), np.asarray(b)
            assert a.shape == b.shape and (a == b).all(), (what, key)
        else:
            assert a == b, (what, key, a, b)


def each_tokenizer(ctx, call, fresh=False):
    for ours, theirs in ctx.tokenizers(fresh):
        call(ours, theirs, type(theirs).__name__)


@idiom(
    "tok-call",
    "tokenizers",
    "core",
    'tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids',
)
def _(ctx):
    def check(ours, theirs, name):
        for kwargs in (
            {},
            dict(padding=True, return_tensors="pt"),
            dict(padding="max_length", truncation=True, return_tensors="np"),
            dict(max_length=6, truncation=True, padding="max_length", return_tensors="pt"),
            dict(return_token_type_ids=True, padding=True),
        ):
            same_encoding(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs), f"{name} {kwargs}")
            same_encoding(ours(TEXTS[0], **kwargs), theirs(TEXTS[0], **kwargs), f"{name} one text {kwargs}")
        a = ours(TEXTS[0], return_tensors="pt").input_ids
        assert a.tolist() == theirs(TEXTS[0], return_tensors="pt").input_ids.tolist()

    each_tokenizer(ctx, check)


@idiom(
    "tok-return_tensors-dtypes",
    "tokenizers",
    "core",
    'tokenizer(texts, padding=True, return_tensors="tf" | "np" | "pt" | "jax")  # tf ids int32',
)
def _(ctx):
    def check(ours, theirs, name):
        for framework in ("tf", "np", "pt", "jax"):
            a, b = (
                ours(TEXTS, padding=True, return_tensors=framework),
                theirs(TEXTS, padding=True, return_tensors=framework),
            )
            for key in b:
                assert str(a[key].dtype) == str(b[key].dtype), (name, framework, key)
                assert np.asarray(a[key]).tolist() == np.asarray(b[key]).tolist()

    each_tokenizer(ctx, check)


@idiom(
    "tok-padding_side",
    "tokenizers",
    "core",
    'tokenizer.padding_side = "left"; from_pretrained(..., padding_side="left"); tokenizer(..., padding_side="left")',
)
def _(ctx):
    def check(ours, theirs, name):
        for tok in (ours, theirs):
            tok.padding_side = "left"
        same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True), f"{name} attribute")
        for tok in (ours, theirs):
            tok.padding_side = "right"
        kwargs = dict(padding=True, padding_side="left", return_tensors="np")
        same_encoding(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs), f"{name} call argument")
        ours, theirs = (
            type(ours).from_pretrained(ctx.pt, padding_side="left"),
            type(theirs).from_pretrained(ctx.pt, padding_side="left"),
        )
        same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True), f"{name} init argument")
        folder = ctx.folder(f"left-{name}")
        ours.save_pretrained(folder)
        assert (
            type(theirs).from_pretrained(folder).padding_side
            == type(ours).from_pretrained(folder).padding_side
            == "left"
        )

    each_tokenizer(ctx, check, fresh=True)


@idiom(
    "tok-truncation_side",
    "tokenizers",
    "core",
    'tokenizer.truncation_side = "left"; tokenizer(texts, truncation=True, max_length=5)',
)
def _(ctx):
    def check(ours, theirs, name):
        for tok in (ours, theirs):
            tok.truncation_side = "left"
        for kwargs in (
            dict(truncation=True, max_length=5),
            dict(truncation=True, max_length=4, add_special_tokens=False),
        ):
            same_encoding(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs), f"{name} {kwargs}")

    each_tokenizer(ctx, check, fresh=True)


@idiom(
    "tok-extras",
    "tokenizers",
    "core",
    "tokenizer(texts, padding=True, return_special_tokens_mask=True, return_length=True)",
)
def _(ctx):
    def check(ours, theirs, name):
        for kwargs in (
            dict(padding=True, return_special_tokens_mask=True, return_length=True),
            dict(padding="max_length", truncation=True, return_special_tokens_mask=True, return_tensors="np"),
            dict(return_special_tokens_mask=True, add_special_tokens=False),
        ):
            same_encoding(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs), f"{name} {kwargs}")

    each_tokenizer(ctx, check)


@idiom(
    "tok-offsets-word_ids",
    "tokenizers",
    "core",
    "fast: tokenizer(texts, return_offsets_mapping=True); enc.word_ids(0); enc.tokens(0)",
)
def _(ctx):
    (slow, hf_slow), (fast, hf_fast) = ctx.tokenizers()
    kwargs = dict(padding=True, return_offsets_mapping=True)
    ours, theirs = fast(TEXTS, **kwargs), hf_fast(TEXTS, **kwargs)
    same_encoding(ours, theirs, "offsets")
    for i in range(len(TEXTS)):
        assert ours.word_ids(i) == theirs.word_ids(i) and ours.tokens(i) == theirs.tokens(i)
        assert ours.sequence_ids(i) == theirs.sequence_ids(i)
    same_encoding(
        fast(TEXTS, return_offsets_mapping=True, padding=True, return_tensors="np"),
        hf_fast(TEXTS, return_offsets_mapping=True, padding=True, return_tensors="np"),
        "np offsets",
    )
    assert (
        fast(TEXTS[2], truncation=True, max_length=5).word_ids()
        == hf_fast(TEXTS[2], truncation=True, max_length=5).word_ids()
    )
    # The pure-Python tokenizers refuse, both of them.
    with pytest.raises(NotImplementedError):
        hf_slow(TEXTS, return_offsets_mapping=True)
    with pytest.raises(NotImplementedError, match="CLIPTokenizerFast"):
        slow(TEXTS, return_offsets_mapping=True)
    with pytest.raises(ValueError, match="non-fast"):
        hf_slow(TEXTS).word_ids(0)
    with pytest.raises(ValueError, match="non-fast"):
        slow(TEXTS).word_ids(0)


@idiom(
    "tok-pad",
    "tokenizers",
    "core",
    'tokenizer.pad([tokenizer(t) for t in texts], return_tensors="pt")  # a data collator',
)
def _(ctx):
    def check(ours, theirs, name):
        for kwargs in (
            dict(return_tensors="pt"),
            dict(padding="max_length", max_length=12),
            dict(padding_side="left"),
        ):
            a = ours.pad([ours(t, return_special_tokens_mask=True) for t in TEXTS], **kwargs)
            b = theirs.pad([theirs(t, return_special_tokens_mask=True) for t in TEXTS], **kwargs)
            same_encoding(a, b, f"{name} pad {kwargs}")
        tensors = ours(TEXTS[:1], return_tensors="np")
        same_encoding(
            ours.pad(tensors), theirs.pad(theirs(TEXTS[:1], return_tensors="np")), f"{name} pad arrays"
        )

    each_tokenizer(ctx, check)


@idiom(
    "tok-encode_plus",
    "tokenizers",
    "core",
    "tokenizer.encode_plus(text, ...); batch_encode_plus(texts, ...); encode(text)",
)
def _(ctx):
    def check(ours, theirs, name):
        kwargs = dict(padding="max_length", max_length=10, truncation=True, return_tensors="pt")
        same_encoding(
            ours.encode_plus(TEXTS[1], **kwargs),
            theirs.encode_plus(TEXTS[1], **kwargs),
            f"{name} encode_plus",
        )
        same_encoding(
            ours.batch_encode_plus(TEXTS, padding=True), theirs.batch_encode_plus(TEXTS, padding=True), name
        )
        assert ours.encode(TEXTS[2]) == theirs.encode(TEXTS[2])
        assert (
            ours.encode(TEXTS[2], return_tensors="pt").tolist()
            == theirs.encode(TEXTS[2], return_tensors="pt").tolist()
        )

    each_tokenizer(ctx, check)


@idiom("tok-to-device", "tokenizers", "core", 'tokenizer(texts, padding=True, return_tensors="pt").to("cpu")')
def _(ctx):
    def check(ours, theirs, name):
        a = ours(TEXTS, padding=True, return_tensors="pt").to("cpu")
        b = theirs(TEXTS, padding=True, return_tensors="pt").to("cpu")
        same_encoding(a, b, name)
        assert a.input_ids.device == b.input_ids.device

    each_tokenizer(ctx, check)


@idiom(
    "tok-add_tokens",
    "tokenizers",
    "core",
    'tokenizer.add_tokens(["<cat-toy>"]); add_special_tokens({"additional_special_tokens": [...]})',
)
def _(ctx):
    def check(ours, theirs, name):
        for tok in (ours, theirs):
            tok.add_tokens("<cat-toy>")
        assert ours.add_tokens(["<sks>", "<cat-toy>"]) == theirs.add_tokens(["<sks>", "<cat-toy>"]) == 1
        special = {"additional_special_tokens": ["<my-style>"]}
        assert ours.add_special_tokens(special) == theirs.add_special_tokens(special) == 1
        assert (
            len(ours) == len(theirs)
            and ours.get_added_vocab().get("<sks>") == theirs.get_added_vocab()["<sks>"]
        )
        text = "a <cat-toy> in <my-style> next to <sks>"
        same_encoding(
            ours(text, return_special_tokens_mask=True), theirs(text, return_special_tokens_mask=True), name
        )
        assert (
            ours.all_special_tokens == theirs.all_special_tokens
            and ours.all_special_ids == theirs.all_special_ids
        )
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
        folder = ctx.folder(f"added-{name}")
        ours.save_pretrained(folder)
        assert type(theirs).from_pretrained(folder)(text)["input_ids"] == ids
        assert type(ours).from_pretrained(folder)(text)["input_ids"] == ids

    each_tokenizer(ctx, check, fresh=True)


@idiom(
    "tok-helpers",
    "tokenizers",
    "core",
    "tokenizer.batch_decode(ids, skip_special_tokens=True); model_max_length; pad_token_id; len(tokenizer); "
    "name_or_path; num_special_tokens_to_add()",
)
def _(ctx):
    def check(ours, theirs, name):
        ids = theirs(TEXTS, padding=True)["input_ids"]
        assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(
            ids, skip_special_tokens=True
        )
        assert ours.decode(ids[0]) == theirs.decode(ids[0])
        for attr in (
            "model_max_length",
            "pad_token_id",
            "eos_token_id",
            "bos_token_id",
            "vocab_size",
            "padding_side",
            "truncation_side",
            "is_fast",
        ):
            assert getattr(ours, attr) == getattr(theirs, attr), (name, attr)
        assert len(ours) == len(theirs) and ours.special_tokens_map == theirs.special_tokens_map
        assert ours.name_or_path == theirs.name_or_path and ours.name_or_path
        for pair in (False, True):
            assert ours.num_special_tokens_to_add(pair) == theirs.num_special_tokens_to_add(pair), name
        assert ours.tokenize(TEXTS[2]) == theirs.tokenize(TEXTS[2])
        assert ours.convert_tokens_to_ids(ours.tokenize(TEXTS[1])) == theirs.convert_tokens_to_ids(
            theirs.tokenize(TEXTS[1])
        )

    each_tokenizer(ctx, check)


@idiom("tok-text_pair", "tokenizers", "core", "tokenizer(texts, text_pair=other_texts)", "clear error")
def _(ctx):
    for ours, _theirs in ctx.tokenizers():
        with pytest.raises(ValueError, match="text_pair is not supported"):
            ours(TEXTS, text_pair=TEXTS)
        with pytest.raises(ValueError, match="stride"):
            ours(TEXTS, stride=2, return_overflowing_tokens=True)


# ---------------------------------------------------------------------------------------------
# Image processor and processor


@idiom(
    "image-steps",
    "image processor",
    "core",
    "image_processor.resize(img, size) / center_crop / rescale / normalize",
)
def _(ctx):
    ours, theirs = (
        CLIPImageProcessor.from_pretrained(ctx.pt),
        transformers.CLIPImageProcessor.from_pretrained(ctx.pt),
    )
    chw = (ctx.images[0].transpose(2, 0, 1) / 255.0).astype(np.float32)
    for image in (ctx.images[0], chw):
        for method, args, kwargs in (
            ("resize", ({"shortest_edge": 24},), {}),
            ("resize", ({"height": 20, "width": 30},), dict(data_format="channels_first")),
            ("center_crop", ({"height": 30, "width": 60},), {}),
            ("rescale", (1 / 255,), {}),
            ("normalize", (ours.image_mean, ours.image_std), {}),
        ):
            a, b = (
                getattr(ours, method)(image, *args, **kwargs),
                getattr(theirs, method)(image, *args, **kwargs),
            )
            assert a.dtype == b.dtype and a.shape == b.shape, (method, a.dtype, b.dtype, a.shape, b.shape)
            close(a, b, f"{method} of {image.dtype}")


@idiom(
    "image-call",
    "image processor",
    "core",
    'image_processor(images, return_tensors="pt").pixel_values; .to("cpu", torch.float16)',
)
def _(ctx):
    ours, theirs = (
        CLIPImageProcessor.from_pretrained(ctx.pt),
        transformers.CLIPImageProcessor.from_pretrained(ctx.pt),
    )
    a, b = ours(ctx.images, return_tensors="pt"), theirs(ctx.images, return_tensors="pt")
    close(a.pixel_values, b.pixel_values, "pixel_values")
    a, b = a.to("cpu", torch.float16), b.to("cpu", torch.float16)
    assert a.pixel_values.dtype == b.pixel_values.dtype == torch.float16
    assert ours.size == theirs.size and ours.crop_size == theirs.crop_size


@idiom(
    "processor",
    "processor",
    "core",
    'processor(text=..., images=..., return_tensors="pt", padding="max_length", truncation=True); '
    "processor.tokenizer / image_processor / model_input_names",
)
def _(ctx):
    ours, theirs = CLIPProcessor.from_pretrained(ctx.pt), transformers.CLIPProcessor.from_pretrained(ctx.pt)
    for kwargs in (dict(padding="max_length", truncation=True), dict(padding=True)):
        a = ours(text=TEXTS, images=ctx.images, return_tensors="pt", **kwargs)
        b = theirs(text=TEXTS, images=ctx.images, return_tensors="pt", **kwargs)
        assert sorted(a.keys()) == sorted(b.keys())
        for key in b:
            close(a[key], b[key], key)
    assert type(ours.tokenizer).__name__ == type(theirs.tokenizer).__name__
    assert type(ours.image_processor).__name__ == type(theirs.image_processor).__name__
    assert ours.model_input_names == theirs.model_input_names and ours.attributes == theirs.attributes
    for only in (dict(text=TEXTS, padding=True), dict(images=ctx.images)):  # one part alone
        assert list(ours(**only, return_tensors="np")) == list(theirs(**only, return_tensors="np")), only
    ids = b["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(
        ids, skip_special_tokens=True
    )
    assert ours.tokenizer(TEXTS).input_ids == theirs.tokenizer(TEXTS).input_ids
    close(
        ours.image_processor(ctx.images[0]).pixel_values[0],
        theirs.image_processor(ctx.images[0]).pixel_values[0],
        "image",
    )
    with torch.no_grad():
        close(
            ctx.torch_model(**a).logits_per_image,
            ctx.hf_torch(**b).logits_per_image,
            "model(**processor(...))",
        )


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("idioms"))


@pytest.mark.parametrize("item", IDIOMS, ids=str)
def test_idiom(item, ctx):
    item.run(ctx)


def test_every_idiom_has_a_known_status():
    assert {i.status for i in IDIOMS} <= {"same", "ours only", "clear error"}
    assert len({i.id for i in IDIOMS}) == len(IDIOMS)
