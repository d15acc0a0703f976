"""clip_flax against transformers 4.57.6 on the same weights: Flax classes, and PyTorch where Flax has none.

Each parity config's reference checkpoint (tests/conftest.py: a seeded transformers PyTorch CLIPModel,
every parameter perturbed so that a LayerNorm scale/bias or a kernel transpose mix-up cannot hide
behind default initial values, saved as a safetensors folder) is loaded into transformers' Flax
classes and into ours. JAX compiles every new shape, which is slow on a busy CPU: configs are tiny,
models are loaded without a random init (_do_init=False), and the costly checks run once per config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from transformers import FlaxCLIPModel as HFFlaxCLIPModel  # noqa: E402
from transformers import FlaxCLIPTextModel as HFFlaxCLIPTextModel  # noqa: E402
from transformers import FlaxCLIPTextModelWithProjection as HFFlaxCLIPTextModelWithProjection  # noqa: E402
from transformers import FlaxCLIPVisionModel as HFFlaxCLIPVisionModel  # noqa: E402

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig  # noqa: E402
from clip_core.pretrained import load_pretrained  # noqa: E402
from clip_core.weights import canonical_shapes, from_flax_params, random_state, to_flax_params  # noqa: E402
from clip_flax import (  # noqa: E402
    FlaxCLIPModel,
    FlaxCLIPModule,
    FlaxCLIPTextModel,
    FlaxCLIPTextModelWithProjection,
    FlaxCLIPVisionModel,
    FlaxCLIPVisionModelWithProjection,
    clip_loss,
)
from tests.tiny_configs import (  # noqa: E402
    BAD_INPUTS,
    CONFIGS,
    Reference,
    assert_close,
    assert_tower_output,
    bad_ids,
    bad_pixels,
    clip_config,
    random_pixels,
)


def hf_flax(cls, folder):
    """(model, params) of a transformers Flax class with the folder's weights, no random init.

    transformers' from_pt conversion needs an initialised model (seconds of JAX compiling per
    class), so its params are the folder's canonical weights in transformers' Flax tree, built by
    clip_core.weights.to_flax_params. That tree is checked against transformers' own files in
    test_reads_and_writes_transformers_flax_msgpack, and the layouts against torch everywhere else.
    """
    config_class = cls.config_class
    config = config_class.from_pretrained(folder)
    kind = {"CLIPConfig": "clip", "CLIPTextConfig": "text_with_projection", "CLIPVisionConfig": "vision"}
    kind = kind[config_class.__name__]
    if cls is HFFlaxCLIPTextModel:
        kind = "text"
    ours_config = {"clip": CLIPConfig, "text": CLIPTextConfig, "text_with_projection": CLIPTextConfig}
    state = load_pretrained(folder, kind, ours_config.get(kind, CLIPVisionConfig).from_pretrained(folder))[1]
    return cls(config, _do_init=False), to_flax_params(state)


class FlaxReference(Reference):
    """transformers' Flax CLIPModel (with the folder's weights, see hf_flax) and ours on the reference checkpoint."""

    def __init__(self, folder: str):
        super().__init__(folder)
        self.hf_flax, self.hf_params = hf_flax(HFFlaxCLIPModel, folder)
        self.ours = FlaxCLIPModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def ref(reference_folder):
    return FlaxReference(reference_folder)


# ---------------------------------------------------------------------------------------------
# Parity with transformers' Flax classes


def test_clip_model_matches_transformers_flax(ref):
    kwargs = dict(
        input_ids=ref.input_ids,
        pixel_values=ref.pixel_values,
        attention_mask=ref.attention_mask,
        output_attentions=True,
        output_hidden_states=True,
    )
    ours = ref.ours(**kwargs, return_loss=True)
    theirs = ref.hf_flax(**kwargs, params=ref.hf_params)
    for field in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert_close(getattr(ours, field), getattr(theirs, field), field)
    assert_tower_output(ours.text_model_output, theirs.text_model_output, "text_model_output")
    assert_tower_output(ours.vision_model_output, theirs.vision_model_output, "vision_model_output")
    # transformers' Flax model has no loss: the torch one does.
    with torch.no_grad():
        torch_loss = ref.torch_model(
            **ref.torch_inputs(
                input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=ref.pixel_values
            ),
            return_loss=True,
        ).loss
    assert ours.loss.shape == () and ours.loss.dtype == jnp.float32
    assert_close(ours.loss, torch_loss.numpy(), "loss")
    # Defaults: no loss, no hidden states; tuples in transformers' order.
    plain = ref.ours(input_ids=ref.input_ids, pixel_values=ref.pixel_values)
    assert plain.loss is None and plain.text_model_output.hidden_states is None
    assert plain.keys() == [
        "logits_per_image",
        "logits_per_text",
        "text_embeds",
        "image_embeds",
        "text_model_output",
        "vision_model_output",
    ]
    as_tuple = ref.ours(input_ids=ref.input_ids, pixel_values=ref.pixel_values, return_dict=False)
    theirs_tuple = ref.hf_flax(
        input_ids=ref.input_ids, pixel_values=ref.pixel_values, params=ref.hf_params, return_dict=False
    )
    assert len(as_tuple) == len(theirs_tuple)
    assert_close(as_tuple[0], theirs_tuple[0], "tuple[0] (logits_per_image) without attention_mask")
    assert_close(as_tuple[4][1], theirs_tuple[4][1], "tuple[4][1] (text pooler_output)")


def test_features_match_transformers_flax(ref):
    ids, mask = ref.input_ids, ref.attention_mask
    assert_close(
        ref.ours.get_text_features(ids, attention_mask=mask),
        ref.hf_flax.get_text_features(ids, attention_mask=mask, params=ref.hf_params),
        "get_text_features",
    )
    assert_close(
        ref.ours.get_image_features(ref.pixel_values),
        ref.hf_flax.get_image_features(ref.pixel_values, params=ref.hf_params),
        "get_image_features",
    )
    # The Linen module's methods directly, as a user with their own params calls them.
    params = {"params": ref.ours.params}
    assert_close(
        ref.ours.module.apply(params, ids, mask, None, method=FlaxCLIPModule.get_text_features),
        ref.ours.get_text_features(ids, attention_mask=mask),
        "module.apply(get_text_features)",
    )


def test_tower_models_match_transformers_flax(ref):
    kwargs = dict(input_ids=ref.input_ids, attention_mask=ref.attention_mask)
    flags = dict(output_attentions=True, output_hidden_states=True)
    theirs_model, theirs_params = hf_flax(HFFlaxCLIPTextModel, ref.folder)
    assert_tower_output(
        FlaxCLIPTextModel.from_pretrained(ref.folder)(**kwargs, **flags),
        theirs_model(**kwargs, **flags, params=theirs_params),
        "FlaxCLIPTextModel",
    )
    theirs_model, theirs_params = hf_flax(HFFlaxCLIPTextModelWithProjection, ref.folder)
    ours = FlaxCLIPTextModelWithProjection.from_pretrained(ref.folder)(**kwargs, **flags)
    theirs = theirs_model(**kwargs, **flags, params=theirs_params)
    assert_close(ours.text_embeds, theirs.text_embeds, "text_embeds")
    assert_tower_output(ours, theirs, "FlaxCLIPTextModelWithProjection")

    theirs_model, theirs_params = hf_flax(HFFlaxCLIPVisionModel, ref.folder)
    assert_tower_output(
        FlaxCLIPVisionModel.from_pretrained(ref.folder)(ref.pixel_values, **flags),
        theirs_model(ref.pixel_values, **flags, params=theirs_params),
        "FlaxCLIPVisionModel",
    )


# ---------------------------------------------------------------------------------------------
# Parity with transformers' PyTorch classes (what Flax never had)


def test_vision_with_projection_matches_transformers_torch(ref):
    theirs_model = transformers.CLIPVisionModelWithProjection.from_pretrained(
        ref.folder, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        theirs = theirs_model(
            pixel_values=torch.from_numpy(ref.pixel_values), output_attentions=True, output_hidden_states=True
        )
    ours = FlaxCLIPVisionModelWithProjection.from_pretrained(ref.folder)(
        ref.pixel_values, output_attentions=True, output_hidden_states=True
    )
    assert_close(ours.image_embeds, theirs.image_embeds, "image_embeds")
    assert_tower_output(ours, theirs, "FlaxCLIPVisionModelWithProjection")


def test_position_ids_per_row_match_transformers_torch(ref):
    seq = ref.input_ids.shape[1]
    per_row = np.stack([np.arange(seq), np.arange(seq)[::-1], np.roll(np.arange(seq), 2)]).astype(np.int32)
    ours = ref.ours.get_text_features(ref.input_ids, position_ids=per_row)
    with torch.no_grad():
        theirs = ref.torch_model.get_text_features(
            **ref.torch_inputs(input_ids=ref.input_ids, position_ids=per_row)
        )
    assert_close(ours, theirs, "get_text_features with position_ids [batch, seq]")


def test_interpolate_pos_encoding_matches_transformers_torch(ref):
    # transformers' Flax CLIP has no interpolate_pos_encoding: compare with its PyTorch model, on a
    # larger, non-square grid.
    vision = ref.config.vision_config
    grid = vision.image_size // vision.patch_size
    height, width = (grid + 2) * vision.patch_size, (grid - 1) * vision.patch_size
    pixels = random_pixels(vision, seed=2, height=height, width=width)
    inputs = ref.torch_inputs(input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=pixels)
    with torch.no_grad():
        theirs = ref.torch_model(**inputs, interpolate_pos_encoding=True, output_hidden_states=True)
    ours = ref.ours(
        ref.input_ids,
        pixels,
        attention_mask=ref.attention_mask,
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    )
    assert_close(ours.logits_per_image, theirs.logits_per_image, "logits_per_image")
    assert_close(
        ours.vision_model_output.hidden_states[0], theirs.vision_model_output.hidden_states[0], "embeddings"
    )


def test_text_pooling_rule():
    # The first eos_token_id, even when a larger id (an added token) comes first; argmax(input_ids)
    # for legacy configs whose eos_token_id is 2. No row with eos pools at 0, like torch's argmax.
    from clip_flax.modeling import CLIPTextTransformer

    ids = np.array([[5, 49408, 49407, 3, 49407], [5, 6, 7, 8, 9], [49407, 1, 1, 1, 1]], np.int32)
    text = clip_config().text_config
    eos = dataclasses.replace(text, vocab_size=49409)
    legacy = dataclasses.replace(text, vocab_size=49409, eos_token_id=2)

    def positions(config):
        return np.asarray(CLIPTextTransformer(config).apply({}, ids, method="pooling_positions"))

    np.testing.assert_array_equal(positions(eos), [2, 0, 0])
    np.testing.assert_array_equal(positions(legacy), [1, 4, 0])


def _clip_loss_fn(model, ref, **module_kwargs):
    def loss(params):
        out = model.module.apply(  # the Linen module takes channels-last pixels, as transformers'
            {"params": params},
            ref.input_ids,
            ref.pixel_values.transpose(0, 2, 3, 1),
            ref.attention_mask,
            **module_kwargs,
        )
        return clip_loss(out.logits_per_text)

    return loss


def test_loss_gradients_match_transformers_torch_and_remat(ref):
    inputs = ref.torch_inputs(
        input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=ref.pixel_values
    )
    ref.torch_model.zero_grad()
    ref.torch_model(**inputs, return_loss=True).loss.backward()
    theirs = {name: p.grad.numpy() for name, p in ref.torch_model.named_parameters()}
    ref.torch_model.zero_grad()

    grads = jax.jit(jax.grad(_clip_loss_fn(ref.ours, ref)))(ref.ours.params)
    ours = from_flax_params(jax.device_get(grads))
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_close(ours[name], theirs[name], f"grad {name}", atol=1e-4)

    # nn.remat per layer: the same param tree and the same gradients (one config: compiling is slow).
    if ref.name != next(iter(CONFIGS)):
        return
    remat = FlaxCLIPModel(ref.config, _do_init=False, remat=True)
    remat_grads = jax.jit(jax.grad(_clip_loss_fn(remat, ref)))(ref.ours.params)
    assert jax.tree_util.tree_structure(remat_grads) == jax.tree_util.tree_structure(grads)
    for name, grad in from_flax_params(jax.device_get(remat_grads)).items():
        assert_close(grad, ours[name], f"remat grad {name}", atol=1e-6)


# ---------------------------------------------------------------------------------------------
# jit, dtypes, dropout


def test_jit_and_eager_agree(ref):
    model = ref.ours
    eager = model(
        ref.input_ids,
        ref.pixel_values,
        attention_mask=ref.attention_mask,
        return_loss=True,
        output_attentions=True,
        output_hidden_states=True,
    )

    @jax.jit
    def forward(params, input_ids, pixel_values, attention_mask):
        return model(
            input_ids,
            pixel_values,
            attention_mask=attention_mask,
            params=params,
            return_loss=True,
            output_attentions=True,
            output_hidden_states=True,
        )

    jitted = forward(model.params, ref.input_ids, ref.pixel_values, ref.attention_mask)
    assert type(jitted) is type(eager)
    assert_close(jitted.loss, eager.loss, "jit loss")
    assert_close(jitted.logits_per_image, eager.logits_per_image, "jit logits_per_image")
    assert_close(
        jitted.text_model_output.attentions[-1], eager.text_model_output.attentions[-1], "jit attentions"
    )
    assert_close(
        jitted.vision_model_output.hidden_states[-1],
        eager.vision_model_output.hidden_states[-1],
        "jit hidden_states",
    )


def test_bfloat16_compute_stays_close_to_float32(ref):
    bf16 = FlaxCLIPModel(ref.config, dtype=jnp.bfloat16, _do_init=False)
    bf16.params = ref.ours.params  # fp32 params, bf16 compute
    forward = jax.jit(lambda p, i, x, a: bf16.module.apply({"params": p}, i, x, a))
    ours = forward(ref.ours.params, ref.input_ids, ref.pixel_values.transpose(0, 2, 3, 1), ref.attention_mask)
    full = ref.ours(ref.input_ids, ref.pixel_values, attention_mask=ref.attention_mask)
    assert ours.text_model_output.last_hidden_state.dtype == jnp.bfloat16
    assert ours.logits_per_image.dtype == jnp.float32
    for field in ("text_embeds", "image_embeds"):
        a, b = np.asarray(getattr(ours, field), np.float64), np.asarray(getattr(full, field), np.float64)
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cos.min() >= 0.999, f"bf16 {field}: cosine similarity {cos.min():.5f}"

    # param_dtype: params stored in bf16 by from_pretrained.
    stored = FlaxCLIPModel.from_pretrained(ref.folder, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    leaves = jax.tree_util.tree_leaves(stored.params)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in leaves)


def test_dropout_runs_only_when_training():
    text_config = dataclasses.replace(clip_config().text_config, attention_dropout=0.5)
    model = FlaxCLIPTextModel(text_config, _do_init=False)
    model.params = to_flax_params(random_state(text_config, "text"))
    ids = np.full((2, 6), 7, np.int32)
    ids[:, -1] = 49407
    run = jax.jit(lambda p, rng, train: model(ids, params=p, dropout_rng=rng, train=train), static_argnums=2)
    key = jax.random.PRNGKey(0)
    test_a, test_b = run(model.params, key, False), run(model.params, jax.random.PRNGKey(1), False)
    np.testing.assert_array_equal(test_a.pooler_output, test_b.pooler_output)
    train_a, train_b = run(model.params, key, True), run(model.params, jax.random.PRNGKey(1), True)
    assert np.abs(np.asarray(train_a.pooler_output) - np.asarray(test_a.pooler_output)).max() > 1e-3
    assert np.abs(np.asarray(train_a.pooler_output) - np.asarray(train_b.pooler_output)).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Params tree and checkpoints


@pytest.mark.parametrize(
    "cls, part, kind",
    [
        (FlaxCLIPModel, None, "clip"),
        (FlaxCLIPTextModel, "text_config", "text"),
        (FlaxCLIPTextModelWithProjection, "text_config", "text_with_projection"),
        (FlaxCLIPVisionModel, "vision_config", "vision"),
        (FlaxCLIPVisionModelWithProjection, "vision_config", "vision_with_projection"),
    ],
)
def test_init_weights_tree_is_the_canonical_flax_tree(cls, part, kind):
    config = clip_config("gelu-eos2")
    config = getattr(config, part) if part else config
    model = cls(config, _do_init=False)
    shapes = jax.eval_shape(lambda rng: model.init_weights(rng, model.input_shape), jax.random.PRNGKey(0))
    expected = to_flax_params({k: np.zeros(s, np.float32) for k, s in canonical_shapes(config, kind).items()})
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(expected)
    assert jax.tree_util.tree_map(lambda s: s.shape, shapes) == jax.tree_util.tree_map(np.shape, expected)
    remat = cls(config, _do_init=False, remat=True)
    remat_shapes = jax.eval_shape(
        lambda rng: remat.init_weights(rng, remat.input_shape), jax.random.PRNGKey(0)
    )
    assert jax.tree_util.tree_structure(remat_shapes) == jax.tree_util.tree_structure(expected)


def test_random_init_runs():
    config = clip_config()
    model = FlaxCLIPModel(config, seed=3)
    params = model.params
    assert float(params["logit_scale"]) == pytest.approx(config.logit_scale_init_value)
    np.testing.assert_array_equal(params["vision_model"]["pre_layrnorm"]["scale"], 1.0)
    kernel = np.asarray(params["text_model"]["encoder"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"])
    assert kernel.shape == (32, 32) and 0 < kernel.std() < 0.2


def test_reads_and_writes_transformers_flax_msgpack(ref, tmp_path):
    # transformers writes flax_model.msgpack; we read it.
    ref.hf_flax.save_pretrained(str(tmp_path / "theirs"), params=ref.hf_params)
    ours = FlaxCLIPModel.from_pretrained(str(tmp_path / "theirs"))
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(ours.params), jax.tree_util.tree_leaves(ref.ours.params)
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # We write flax_model.msgpack; transformers reads it (alone in the folder, so that it is what
    # transformers loads).
    written = ref.ours.save_pretrained(str(tmp_path / "ours"), formats=("flax",))
    assert any(path.endswith("flax_model.msgpack") for path in written)
    theirs, theirs_params = HFFlaxCLIPModel.from_pretrained(str(tmp_path / "ours"), _do_init=False)
    kwargs = dict(input_ids=ref.input_ids, pixel_values=ref.pixel_values, attention_mask=ref.attention_mask)
    assert_close(
        theirs(**kwargs, params=theirs_params).logits_per_image,
        ref.ours(**kwargs).logits_per_image,
        "logits through flax_model.msgpack",
    )
    # model.safetensors (canonical names) is read by transformers' torch class.
    ref.ours.save_pretrained(str(tmp_path / "safetensors"))
    reloaded = transformers.CLIPModel.from_pretrained(str(tmp_path / "safetensors")).eval()
    for name, tensor in reloaded.state_dict().items():
        if not name.endswith("position_ids"):
            np.testing.assert_array_equal(
                tensor.numpy(), ref.torch_model.state_dict()[name].numpy(), err_msg=name
            )


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.fixture(scope="module")
def tiny():
    config = clip_config()
    model = FlaxCLIPModel(config, _do_init=False)
    model.params = to_flax_params(random_state(config, "clip"))
    return model


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_inputs_under_jit_and_in_module_apply(tiny):
    with pytest.raises(ValueError, match="pixel_values must be 32x32"):
        jax.jit(lambda p: tiny.get_image_features(p))(bad_pixels(size=48))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        jax.jit(lambda i: tiny.get_text_features(i))(bad_ids(seq=17))
    with pytest.raises(ValueError, match="as many texts as images"):
        jax.jit(lambda i, p: tiny.module.apply({"params": tiny.params}, i, p, return_loss=True))(
            bad_ids(), bad_pixels(batch=3).transpose(0, 2, 3, 1)
        )
    with pytest.raises(ValueError, match="channels-last"):  # the module's layout, as transformers'
        tiny.module.apply({"params": tiny.params}, bad_ids(), bad_pixels())
    # Concrete ids reaching the module directly are still checked by value.
    with pytest.raises(ValueError, match="input_ids must lie in"):
        tiny.module.apply(
            {"params": tiny.params}, np.full((1, 3), 49408), method=FlaxCLIPModule.get_text_features
        )
    vision = FlaxCLIPVisionModel(tiny.config.vision_config, _do_init=False)
    with pytest.raises(ValueError, match="You have to specify pixel_values"):
        vision()
