"""clip_torch against transformers 4.57.6's PyTorch classes on the same weights.

Each parity config's reference checkpoint (tests/conftest.py: a seeded transformers CLIPModel, every
parameter perturbed so that a LayerNorm weight/bias or bias mix-up cannot hide behind default initial
values, a non-default logit_scale, saved as a safetensors folder) is loaded into transformers'
classes (eager attention where attention maps are compared, sdpa otherwise) and into ours.
"""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402

from clip_core.weights import canonical_shapes  # noqa: E402
from clip_torch import (  # noqa: E402
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)
from tests.tiny_configs import (  # noqa: E402
    BAD_INPUTS,
    Reference,
    assert_close,
    bad_ids,
    bad_pixels,
    clip_config,
    random_pixels,
)


class TorchReference(Reference):
    """transformers' CLIPModel (eager and sdpa) and ours on the reference checkpoint; inputs as tensors."""

    def __init__(self, folder: str):
        super().__init__(folder)
        self.eager = transformers.CLIPModel.from_pretrained(folder, attn_implementation="eager").eval()
        self.sdpa = transformers.CLIPModel.from_pretrained(folder, attn_implementation="sdpa").eval()
        self.ours = CLIPModel.from_pretrained(folder)
        self.input_ids, self.attention_mask = (
            torch.from_numpy(x).long() for x in (self.input_ids, self.attention_mask)
        )
        self.pixel_values = torch.from_numpy(self.pixel_values)

    def inputs(self, **extra):
        return dict(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            pixel_values=self.pixel_values,
            **extra,
        )


@pytest.fixture(scope="module")
def ref(reference_folder):
    return TorchReference(reference_folder)


def assert_fields(ours, theirs, what):
    """Every field transformers returns (tensors, tuples of tensors, nested outputs), and no other."""
    assert list(ours.keys()) == list(theirs.keys()), f"{what}: {list(ours.keys())} vs {list(theirs.keys())}"
    for key in theirs.keys():
        a, b = ours[key], theirs[key]
        if isinstance(b, torch.Tensor):
            assert_close(a, b, f"{what}.{key}")
        elif isinstance(b, tuple):
            assert len(a) == len(b), f"{what}.{key}: {len(a)} vs {len(b)} entries"
            for i, (x, y) in enumerate(zip(a, b)):
                assert_close(x, y, f"{what}.{key}[{i}]")
        else:
            assert_fields(a, b, f"{what}.{key}")


# ---------------------------------------------------------------------------------------------
# Parity of every class and field


def test_clip_model_matches_transformers(ref):
    kwargs = ref.inputs(return_loss=True, output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        ours, theirs = ref.ours(**kwargs), ref.eager(**kwargs)
    assert ours.text_model_output.attentions is not None and ours.loss is not None
    assert_fields(ours, theirs, "CLIPOutput")


def test_sdpa_path_and_tuples_match_transformers(ref):
    kwargs = ref.inputs(output_hidden_states=True)
    with torch.no_grad():
        ours, theirs = ref.ours(**kwargs), ref.sdpa(**kwargs)
        assert ours.loss is None and ours.vision_model_output.attentions is None
        assert_fields(ours, theirs, "CLIPOutput (sdpa)")
        # Without attention_mask, and as tuples.
        plain = dict(input_ids=ref.input_ids, pixel_values=ref.pixel_values, return_dict=False)
        ours, theirs = ref.ours(**plain), ref.sdpa(**plain)
    assert len(ours) == len(theirs) == 6
    for i in range(4):
        assert_close(ours[i], theirs[i], f"tuple[{i}]")
    assert_close(ours[4][1], theirs[4][1], "tuple[4][1] (text pooler_output)")
    assert_close(ours[5][1], theirs[5][1], "tuple[5][1] (vision pooler_output)")


def test_features_match_transformers(ref):
    with torch.no_grad():
        assert_close(
            ref.ours.get_text_features(input_ids=ref.input_ids, attention_mask=ref.attention_mask),
            ref.sdpa.get_text_features(input_ids=ref.input_ids, attention_mask=ref.attention_mask),
            "get_text_features",
        )
        assert_close(
            ref.ours.get_image_features(pixel_values=ref.pixel_values),
            ref.sdpa.get_image_features(pixel_values=ref.pixel_values),
            "get_image_features",
        )
        # numpy in, like a processor's return_tensors="np" output.
        assert_close(
            ref.ours.get_text_features(input_ids=ref.input_ids.numpy().astype(np.int32)),
            ref.sdpa.get_text_features(input_ids=ref.input_ids),
            "get_text_features from numpy int32",
        )


def test_position_ids_match_transformers(ref):
    seq = ref.input_ids.shape[1]
    per_row = torch.stack([torch.arange(seq), torch.arange(seq).flip(0), torch.arange(seq).roll(2)])
    with torch.no_grad():
        for positions in (per_row, per_row[1:2]):
            assert_close(
                ref.ours.get_text_features(input_ids=ref.input_ids, position_ids=positions),
                ref.sdpa.get_text_features(input_ids=ref.input_ids, position_ids=positions),
                f"get_text_features with position_ids {tuple(positions.shape)}",
            )


@pytest.mark.parametrize(
    "ours_cls, theirs_name, tower",
    [
        (CLIPTextModel, "CLIPTextModel", "text"),
        (CLIPTextModelWithProjection, "CLIPTextModelWithProjection", "text"),
        (CLIPVisionModel, "CLIPVisionModel", "vision"),
        (CLIPVisionModelWithProjection, "CLIPVisionModelWithProjection", "vision"),
    ],
)
def test_tower_models_match_transformers(ref, ours_cls, theirs_name, tower):
    theirs_model = (
        getattr(transformers, theirs_name).from_pretrained(ref.folder, attn_implementation="eager").eval()
    )
    ours_model = ours_cls.from_pretrained(ref.folder)
    if tower == "text":
        kwargs = dict(input_ids=ref.input_ids, attention_mask=ref.attention_mask)
    else:
        kwargs = dict(pixel_values=ref.pixel_values)
    with torch.no_grad():
        for flags in (dict(output_attentions=True, output_hidden_states=True), {}):
            ours, theirs = ours_model(**kwargs, **flags), theirs_model(**kwargs, **flags)
            assert_fields(ours, theirs, f"{ours_cls.__name__}({', '.join(flags)})")


@pytest.mark.parametrize("scale", [(1.5, 1.25), (0.5, 2.0)], ids=["larger-non-square", "smaller-and-larger"])
def test_interpolate_pos_encoding_matches_transformers(ref, scale):
    vision = ref.config.vision_config
    grid = vision.image_size // vision.patch_size
    height = max(1, round(grid * scale[0])) * vision.patch_size
    width = round(grid * scale[1]) * vision.patch_size
    pixels = torch.from_numpy(random_pixels(vision, seed=2, height=height, width=width))
    kwargs = ref.inputs(interpolate_pos_encoding=True, output_hidden_states=True, return_loss=True)
    kwargs["pixel_values"] = pixels
    with torch.no_grad():
        assert_fields(ref.ours(**kwargs), ref.sdpa(**kwargs), f"CLIPOutput at {height}x{width}")
        assert_close(
            ref.ours.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True),
            ref.sdpa.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True),
            "get_image_features",
        )


# ---------------------------------------------------------------------------------------------
# Gradients, gradient checkpointing, torch.compile


def _grads(model, kwargs) -> dict:
    model.zero_grad()
    model(**kwargs, return_loss=True).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_loss_gradients_match_transformers(ref, checkpointing):
    theirs = _grads(ref.sdpa, ref.inputs())
    model = CLIPModel.from_pretrained(ref.folder, gradient_checkpointing=checkpointing).train()
    calls = []
    layer = model.vision_model.encoder.layers[0]
    forward = layer.forward

    def counting_forward(*args, **kwargs):  # forward hooks do not fire on checkpoint recompute
        calls.append(1)
        return forward(*args, **kwargs)

    layer.forward = counting_forward
    ours = _grads(model, ref.inputs())
    # With checkpointing, the backward pass runs each layer's forward again.
    assert len(calls) == (2 if checkpointing else 1)
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_close(ours[name], theirs[name], f"grad {name}")


def test_gradient_checkpointing_switch():
    config = clip_config()
    model = CLIPModel(config)
    encoders = [model.text_model.encoder, model.vision_model.encoder]
    assert not model.is_gradient_checkpointing and not any(e.gradient_checkpointing for e in encoders)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and all(e.gradient_checkpointing for e in encoders)
    model.gradient_checkpointing_disable()
    assert not any(e.gradient_checkpointing for e in encoders)
    assert all(
        e.gradient_checkpointing for e in (CLIPModel(config, gradient_checkpointing=True).text_model.encoder,)
    )


def test_torch_compile_fullgraph_with_checkpointing_and_backward(ref):
    # backend="eager": dynamo's tracing only, no inductor C++ compile (cheap on a busy CPU);
    # fullgraph=True fails on any graph break. Checkpointing on, so it is traced too. One config.
    if ref.config.text_config.uses_legacy_eos_pooling:
        pytest.skip("one config is enough for the compile smoke test")
    # The text tower only (tracing both costs twice as much); the vision tower shares the encoder.
    model = CLIPTextModelWithProjection.from_pretrained(ref.folder, gradient_checkpointing=True).train()
    kwargs = dict(input_ids=ref.input_ids, attention_mask=ref.attention_mask)
    expected = model(**kwargs).text_embeds
    expected.square().sum().backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    embeds = compiled(**kwargs).text_embeds
    embeds.square().sum().backward()
    assert_close(embeds, expected, "compiled text_embeds")
    for name, param in model.named_parameters():
        assert_close(param.grad, expected_grads[name], f"compiled grad {name}")


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_state_dict_keys_are_canonical(ref):
    for cls, config, kind in (
        (CLIPModel, ref.config, "clip"),
        (CLIPTextModel, ref.config.text_config, "text"),
        (CLIPTextModelWithProjection, ref.config.text_config, "text_with_projection"),
        (CLIPVisionModel, ref.config.vision_config, "vision"),
        (CLIPVisionModelWithProjection, ref.config.vision_config, "vision_with_projection"),
    ):
        state = cls(config).state_dict()
        assert {k: tuple(v.shape) for k, v in state.items()} == canonical_shapes(config, kind), cls.__name__
    assert "vision_model.pre_layrnorm.weight" in ref.ours.state_dict()


def test_from_pretrained_reads_transformers_bin(ref, tmp_path):
    ref.eager.save_pretrained(str(tmp_path), safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    loaded = CLIPModel.from_pretrained(str(tmp_path))
    for name, tensor in ref.eager.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # A tower from the full CLIP folder drops the other tower's tensors.
    vision = CLIPVisionModelWithProjection.from_pretrained(str(tmp_path))
    assert torch.equal(vision.visual_projection.weight, ref.eager.visual_projection.weight)


@pytest.mark.parametrize("formats", [("safetensors",), ("pytorch",)])
def test_save_pretrained_is_read_by_transformers(ref, tmp_path, formats):
    written = ref.ours.save_pretrained(str(tmp_path), formats=formats)
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == sorted(
        ["config.json", "model.safetensors" if formats == ("safetensors",) else "pytorch_model.bin"]
    )
    reloaded = transformers.CLIPModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        assert_fields(ref.ours(**ref.inputs()), reloaded(**ref.inputs()), f"reloaded from {formats[0]}")
    ours_again = CLIPModel.from_pretrained(str(tmp_path))
    for name, tensor in ref.ours.state_dict().items():
        assert torch.equal(ours_again.state_dict()[name], tensor), name


def test_processor_output_feeds_the_model(ref):
    if ref.config.text_config.vocab_size != 49408:
        pytest.skip("needs the real vocabulary")
    from clip_core.image_processing import CLIPImageProcessor
    from clip_core.processing import CLIPProcessor
    from clip_core.tokenization import CLIPTokenizer

    size = ref.config.vision_config.image_size
    processor = CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        CLIPTokenizer(),
    )
    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(2)]
    for tensors in ("pt", "np"):
        batch = processor(
            text=["a photo of a cat", "a dog"], images=images, return_tensors=tensors, padding=True
        )
        with torch.no_grad():
            ours = ref.ours(**batch, return_loss=True)
            theirs = ref.sdpa(
                **{k: torch.as_tensor(np.asarray(v)) for k, v in batch.items()}, return_loss=True
            )
        assert_fields(ours, theirs, f"processor output ({tensors})")


# ---------------------------------------------------------------------------------------------
# dtypes


def _cosine(a, b):
    a, b = a.float().flatten(), b.float().flatten()
    return (a @ b / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16"])
def test_half_precision_close_to_float32(ref, dtype):
    model = CLIPModel.from_pretrained(ref.folder, dtype=dtype)
    expected_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float16
    assert (
        model.dtype == expected_dtype
        and model.text_model.encoder.layers[0].self_attn.q_proj.weight.dtype == expected_dtype
    )
    with torch.no_grad():
        ours = model(**ref.inputs(), return_loss=True, output_attentions=True)
        full = ref.ours(**ref.inputs(), return_loss=True)
    assert ours.image_embeds.dtype == expected_dtype
    for field in ("text_embeds", "image_embeds", "logits_per_image"):
        assert _cosine(ours[field], full[field]) > 0.999, field
    assert torch.isfinite(ours.loss) and abs(ours.loss.item() - full.loss.item()) < 0.05


def test_bfloat16_save_and_load(ref, tmp_path):
    model = CLIPTextModel.from_pretrained(ref.folder, dtype="bfloat16")
    model.save_pretrained(str(tmp_path))
    again = CLIPTextModel.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.fixture(scope="module")
def tiny():
    return CLIPModel(clip_config())


def _ids(**kwargs):
    return torch.from_numpy(bad_ids(**kwargs)).long()


def _pixels(**kwargs):
    return torch.from_numpy(bad_pixels(**kwargs))


def _as_torch(kwargs: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


@pytest.mark.parametrize(
    "kwargs, message",
    [(_as_torch(kwargs), message) for kwargs, message in BAD_INPUTS]
    + [
        (dict(input_ids=_ids().float(), pixel_values=_pixels()), "integer token ids"),
        (dict(), "input_ids and pixel_values"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_inputs_to_towers_and_features(tiny):
    with pytest.raises(ValueError, match="pixel_values must be 32x32"):
        tiny.get_image_features(pixel_values=_pixels(size=48))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tiny.get_text_features(input_ids=_ids(seq=17))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        CLIPTextModel(tiny.config.text_config)(input_ids=torch.full((1, 3), 49408))
    with pytest.raises(ValueError, match="You have to specify pixel_values"):
        CLIPVisionModelWithProjection(tiny.config.vision_config)()
    with pytest.raises(ValueError, match="hidden_act"):
        CLIPTextModel(clip_config().text_config.__class__(hidden_act="swish2"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        CLIPModel.from_pretrained("/nonexistent", dtype="float8")
