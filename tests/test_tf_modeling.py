"""clip_tf against transformers 4.57.6 on the same weights: TF classes, and PyTorch where TF has none.

Each parity config's reference checkpoint (tests/conftest.py: a seeded transformers PyTorch CLIPModel,
every parameter perturbed so that a LayerNorm gamma/beta or bias mix-up cannot hide behind default
initial values, saved as a safetensors folder) is loaded into transformers' TF classes (from_pt=True)
and into ours.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# transformers' TF models set TF_USE_LEGACY_KERAS=1 on import (tf.keras becomes tf-keras): import
# them before clip_tf, so that every test here runs in that environment.
transformers = pytest.importorskip("transformers")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from transformers import TFCLIPModel as HFTFCLIPModel  # noqa: E402
from transformers import TFCLIPTextModel as HFTFCLIPTextModel  # noqa: E402
from transformers import TFCLIPVisionModel as HFTFCLIPVisionModel  # noqa: E402

from clip_core.weights import from_channels_last  # noqa: E402
from clip_tf import (  # noqa: E402
    TFCLIPModel,
    TFCLIPTextModel,
    TFCLIPTextModelWithProjection,
    TFCLIPVisionModel,
    TFCLIPVisionModelWithProjection,
)
from clip_tf.modeling import canonical_name  # noqa: E402
from tests.tiny_configs import (  # noqa: E402
    BAD_INPUTS,
    Reference,
    assert_close,
    assert_tower_output,
    bad_ids,
    bad_pixels,
    clip_batch,
    clip_config,
    random_pixels,
)


class TFReference(Reference):
    """transformers' TF CLIPModel (from_pt=True) and ours on the reference checkpoint."""

    def __init__(self, folder: str):
        super().__init__(folder)
        self.hf_tf = HFTFCLIPModel.from_pretrained(folder, from_pt=True)
        self.ours = TFCLIPModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def ref(reference_folder):
    return TFReference(reference_folder)


# ---------------------------------------------------------------------------------------------
# Parity with transformers' TF classes


def test_clip_model_matches_transformers_tf(ref):
    kwargs = dict(
        input_ids=ref.input_ids,
        pixel_values=ref.pixel_values,
        attention_mask=ref.attention_mask,
        return_loss=True,
        output_attentions=True,
        output_hidden_states=True,
    )
    ours, theirs = ref.ours(**kwargs), ref.hf_tf(**kwargs)
    assert_close(np.reshape(ours.loss, (1,)), theirs.loss, "loss")
    for field in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert_close(getattr(ours, field), getattr(theirs, field), field)
    assert_tower_output(ours.text_model_output, theirs.text_model_output, "text_model_output")
    assert_tower_output(ours.vision_model_output, theirs.vision_model_output, "vision_model_output")


def test_default_outputs_and_tuples(ref):
    ours = ref.ours(input_ids=ref.input_ids, pixel_values=ref.pixel_values)
    theirs = ref.hf_tf(input_ids=ref.input_ids, pixel_values=ref.pixel_values)
    assert ours.loss is None and ours.text_model_output.hidden_states is None
    assert ours.keys() == list(theirs.keys())
    assert_close(ours.logits_per_image, theirs.logits_per_image, "logits_per_image without attention_mask")
    as_tuple = ref.ours(input_ids=ref.input_ids, pixel_values=ref.pixel_values, return_dict=False)
    theirs_tuple = ref.hf_tf(input_ids=ref.input_ids, pixel_values=ref.pixel_values, return_dict=False)
    assert len(as_tuple) == len(theirs_tuple)
    assert_close(as_tuple[0], theirs_tuple[0], "tuple[0] (logits_per_image)")
    assert_close(as_tuple[4][1], theirs_tuple[4][1], "tuple[4][1] (text pooler_output)")


def test_features_match_transformers_tf(ref):
    ids, mask = ref.input_ids, ref.attention_mask
    assert_close(
        ref.ours.get_text_features(input_ids=ids, attention_mask=mask),
        ref.hf_tf.get_text_features(input_ids=tf.constant(ids), attention_mask=tf.constant(mask)),
        "get_text_features",
    )
    assert_close(
        ref.ours.get_image_features(pixel_values=ref.pixel_values),
        ref.hf_tf.get_image_features(pixel_values=tf.constant(ref.pixel_values)),
        "get_image_features",
    )


def test_position_ids_match_transformers(ref):
    seq = ref.input_ids.shape[1]
    # One row of positions for the batch: transformers' TF model handles only this form.
    shared = np.arange(seq)[::-1][None].astype(np.int32)
    ours = ref.ours.get_text_features(input_ids=ref.input_ids, position_ids=shared)
    theirs = ref.hf_tf.get_text_features(
        input_ids=tf.constant(ref.input_ids), position_ids=tf.constant(shared)
    )
    assert_close(ours, theirs, "get_text_features with position_ids [1, seq]")
    # Positions per row: transformers' TF model tiles them wrongly, so compare with its PyTorch model.
    per_row = np.stack([np.arange(seq), np.arange(seq)[::-1], np.roll(np.arange(seq), 2)]).astype(np.int32)
    ours = ref.ours.get_text_features(input_ids=ref.input_ids, position_ids=per_row)
    with torch.no_grad():
        theirs = ref.torch_model.get_text_features(
            **ref.torch_inputs(input_ids=ref.input_ids, position_ids=per_row)
        )
    assert_close(ours, theirs, "get_text_features with position_ids [batch, seq]")


def test_tower_models_match_transformers_tf(ref):
    text_ours = TFCLIPTextModel.from_pretrained(ref.folder)
    text_theirs = HFTFCLIPTextModel.from_pretrained(ref.folder, from_pt=True)
    kwargs = dict(
        input_ids=ref.input_ids,
        attention_mask=ref.attention_mask,
        output_attentions=True,
        output_hidden_states=True,
    )
    assert_tower_output(text_ours(**kwargs), text_theirs(**kwargs), "TFCLIPTextModel")

    vision_ours = TFCLIPVisionModel.from_pretrained(ref.folder)
    vision_theirs = HFTFCLIPVisionModel.from_pretrained(ref.folder, from_pt=True)
    kwargs = dict(pixel_values=ref.pixel_values, output_attentions=True, output_hidden_states=True)
    assert_tower_output(vision_ours(**kwargs), vision_theirs(**kwargs), "TFCLIPVisionModel")


# ---------------------------------------------------------------------------------------------
# Parity with transformers' PyTorch classes (what TF never had)


def test_with_projection_models_match_transformers_torch(ref):
    text_theirs = transformers.CLIPTextModelWithProjection.from_pretrained(
        ref.folder, attn_implementation="eager"
    ).eval()
    text_ours = TFCLIPTextModelWithProjection.from_pretrained(ref.folder)
    with torch.no_grad():
        theirs = text_theirs(
            **ref.torch_inputs(input_ids=ref.input_ids, attention_mask=ref.attention_mask),
            output_attentions=True,
            output_hidden_states=True,
        )
    ours = text_ours(
        input_ids=ref.input_ids,
        attention_mask=ref.attention_mask,
        output_attentions=True,
        output_hidden_states=True,
    )
    assert_close(ours.text_embeds, theirs.text_embeds, "text_embeds")
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "text last_hidden_state")
    for field in ("hidden_states", "attentions"):
        assert len(getattr(ours, field)) == len(getattr(theirs, field))
        for i, (a, b) in enumerate(zip(getattr(ours, field), getattr(theirs, field))):
            assert_close(a, b, f"text {field}[{i}]")

    vision_theirs = transformers.CLIPVisionModelWithProjection.from_pretrained(ref.folder).eval()
    vision_ours = TFCLIPVisionModelWithProjection.from_pretrained(ref.folder)
    with torch.no_grad():
        theirs = vision_theirs(pixel_values=torch.from_numpy(ref.pixel_values), output_hidden_states=True)
    ours = vision_ours(pixel_values=ref.pixel_values, output_hidden_states=True)
    assert_close(ours.image_embeds, theirs.image_embeds, "image_embeds")
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "vision last_hidden_state")
    for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        assert_close(a, b, f"vision hidden_states[{i}]")


@pytest.mark.parametrize("scale", [(1.5, 1.25), (0.5, 2.0)], ids=["larger-non-square", "smaller-and-larger"])
def test_interpolate_pos_encoding_matches_transformers_torch(ref, scale):
    # transformers' TF CLIP has no interpolate_pos_encoding: compare with its PyTorch model.
    vision = ref.config.vision_config
    grid = vision.image_size // vision.patch_size
    height = max(1, round(grid * scale[0])) * vision.patch_size
    width = round(grid * scale[1]) * vision.patch_size
    pixels = random_pixels(vision, seed=2, height=height, width=width)
    inputs = ref.torch_inputs(input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=pixels)
    with torch.no_grad():
        theirs = ref.torch_model(**inputs, interpolate_pos_encoding=True, output_hidden_states=True)
        theirs_features = ref.torch_model.get_image_features(
            pixel_values=inputs["pixel_values"], interpolate_pos_encoding=True
        )
    ours = ref.ours(
        input_ids=ref.input_ids,
        attention_mask=ref.attention_mask,
        pixel_values=pixels,
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    )
    assert_close(ours.logits_per_image, theirs.logits_per_image, "logits_per_image")
    assert_close(
        ours.vision_model_output.hidden_states[0], theirs.vision_model_output.hidden_states[0], "embeddings"
    )
    assert_close(
        ref.ours.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True),
        theirs_features,
        "get_image_features",
    )


def test_contrastive_loss_gradients_match_transformers_torch(ref):
    inputs = ref.torch_inputs(
        input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=ref.pixel_values
    )
    ref.torch_model.zero_grad()
    ref.torch_model(**inputs, return_loss=True).loss.backward()
    theirs = {name: p.grad.numpy() for name, p in ref.torch_model.named_parameters()}
    ref.torch_model.zero_grad()

    variables = ref.ours.trainable_variables
    with tf.GradientTape() as tape:
        loss = ref.ours(
            input_ids=ref.input_ids,
            attention_mask=ref.attention_mask,
            pixel_values=ref.pixel_values,
            return_loss=True,
        ).loss
    grads = tape.gradient(loss, variables)
    ours = {}
    for variable, grad in zip(variables, grads):
        name = canonical_name(variable.path)
        # Embedding gradients come as IndexedSlices: densify them.
        ours[name] = from_channels_last(name, tf.convert_to_tensor(grad).numpy())
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_close(ours[name], theirs[name], f"grad {name}", atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Eager, tf.function and XLA


def test_eager_function_and_xla_agree(ref):
    model = ref.ours
    if ref.config.text_config.uses_legacy_eos_pooling:
        # Compiling the whole model costs ~20 s on a busy CPU: here only the argmax pooling path.
        features = tf.function(
            lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=True
        )
        eager = model.get_text_features(input_ids=ref.input_ids, attention_mask=ref.attention_mask)
        assert_close(features(ref.input_ids, ref.attention_mask), eager, "XLA text features (argmax pooling)")
        return
    inputs = dict(
        input_ids=tf.constant(ref.input_ids),
        attention_mask=tf.constant(ref.attention_mask),
        pixel_values=tf.constant(ref.pixel_values),
    )

    def forward(input_ids, attention_mask, pixel_values):
        return model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            return_loss=True,
            output_hidden_states=True,
            output_attentions=True,
        )

    eager = forward(**inputs)
    for jit in (False, True):
        traced = tf.function(forward, jit_compile=jit)(**inputs)
        what = "XLA" if jit else "tf.function"
        assert_close(traced.loss, eager.loss, f"{what} loss")
        assert_close(traced.logits_per_image, eager.logits_per_image, f"{what} logits_per_image")
        assert_close(
            traced.text_model_output.attentions[-1],
            eager.text_model_output.attentions[-1],
            f"{what} attentions",
        )
        assert_close(
            traced.vision_model_output.hidden_states[-1],
            eager.vision_model_output.hidden_states[-1],
            f"{what} hidden_states",
        )
    vision = ref.config.vision_config
    bigger = random_pixels(vision, batch=2, seed=3, height=vision.image_size + vision.patch_size)
    features = tf.function(
        lambda p: model.get_image_features(pixel_values=p, interpolate_pos_encoding=True), jit_compile=True
    )
    assert_close(
        features(bigger),
        model.get_image_features(pixel_values=bigger, interpolate_pos_encoding=True),
        "XLA interpolate",
    )


# ---------------------------------------------------------------------------------------------
# Training with Keras fit


def test_fit_lowers_contrastive_loss():
    # One layer per tower: tracing Keras' train step costs seconds per layer on a busy CPU.
    keras.utils.set_random_seed(0)
    config = clip_config("micro")
    model = TFCLIPModel(config)
    dataset = tf.data.Dataset.from_tensor_slices(clip_batch(config, 8)).batch(4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = model.fit(dataset, epochs=4, verbose=0).history["loss"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05, f"loss per epoch {losses}"


# ---------------------------------------------------------------------------------------------
# Keras 3, serialisation, checkpoints


def test_runs_on_keras_3_after_transformers_set_legacy_keras(ref):
    # Importing transformers' TF CLIP (done at the top of this file) sets TF_USE_LEGACY_KERAS=1.
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    tf_keras = pytest.importorskip("tf_keras")
    model = TFCLIPTextModel(ref.config.text_config)
    assert keras.__version__.startswith("3")
    assert isinstance(model, keras.Model) and not isinstance(model, tf_keras.Model)
    sublayers = model._flatten_layers(include_self=False)
    assert sublayers and all(isinstance(layer, keras.layers.Layer) for layer in sublayers)
    assert not any(isinstance(layer, tf_keras.layers.Layer) for layer in sublayers)
    assert all(type(v).__module__.startswith("keras") for v in model.weights)


def test_keras_save_and_load(ref, tmp_path):
    path = str(tmp_path / "clip.keras")
    ref.ours.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is TFCLIPModel and loaded.config == ref.config
    kwargs = dict(input_ids=ref.input_ids, pixel_values=ref.pixel_values, attention_mask=ref.attention_mask)
    np.testing.assert_array_equal(loaded(**kwargs).logits_per_image, ref.ours(**kwargs).logits_per_image)
    clone = TFCLIPModel.from_config(ref.ours.get_config())
    assert clone.config == ref.config and clone.name == ref.ours.name


def test_save_pretrained_is_read_by_transformers(ref, tmp_path):
    ref.ours.save_pretrained(str(tmp_path), safe_serialization=True)  # model.safetensors
    reloaded = transformers.CLIPModel.from_pretrained(str(tmp_path)).eval()
    inputs = ref.torch_inputs(
        input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=ref.pixel_values
    )
    with torch.no_grad():
        theirs = reloaded(**inputs).logits_per_image.numpy()
    ours = ref.ours(input_ids=ref.input_ids, attention_mask=ref.attention_mask, pixel_values=ref.pixel_values)
    assert_close(ours.logits_per_image, theirs, "logits after save_pretrained -> transformers")


def test_save_pretrained_h5(ref, tmp_path):
    # The default: h5 alone, as transformers' TF classes write. Given a model.safetensors too,
    # transformers' TF loader prefers it and then fails on safetensors 0.8's safe_open (its own bug).
    written = ref.ours.save_pretrained(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["config.json", "tf_model.h5"]
    theirs = HFTFCLIPModel.from_pretrained(str(tmp_path))
    kwargs = dict(input_ids=ref.input_ids, pixel_values=ref.pixel_values, attention_mask=ref.attention_mask)
    assert_close(ref.ours(**kwargs).logits_per_image, theirs(**kwargs).logits_per_image, "tf_model.h5 logits")


def test_canonical_names_cover_every_variable(ref):
    from clip_core.weights import canonical_shapes

    for cls, config, kind in (
        (TFCLIPModel, ref.config, "clip"),
        (TFCLIPTextModelWithProjection, ref.config.text_config, "text_with_projection"),
        (TFCLIPVisionModelWithProjection, ref.config.vision_config, "vision_with_projection"),
    ):
        state = cls(config).canonical_state()
        assert {k: v.shape for k, v in state.items()} == canonical_shapes(config, kind)


def test_bfloat16_policy_runs_close_to_float32(ref):
    model = TFCLIPTextModel.from_pretrained(ref.folder, dtype="bfloat16")
    assert model.text_model.encoder.layers[0].self_attn.q_proj.kernel.dtype == "bfloat16"
    ours = model(input_ids=ref.input_ids, attention_mask=ref.attention_mask).pooler_output
    full = TFCLIPTextModel.from_pretrained(ref.folder)(
        input_ids=ref.input_ids, attention_mask=ref.attention_mask
    )
    assert ours.dtype == tf.bfloat16
    assert_close(tf.cast(ours, tf.float32), full.pooler_output, "bf16 pooler_output", atol=0.1)


def test_other_keras_backend_is_refused():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", "import clip_tf"], env=env, capture_output=True, text=True, cwd=os.getcwd()
    )
    assert result.returncode != 0
    assert "KERAS_BACKEND='jax'" in result.stderr and "ImportError" in result.stderr


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.fixture(scope="module")
def tiny():
    return TFCLIPModel(clip_config())


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_inputs_in_tf_function(tiny):
    with pytest.raises(ValueError, match="pixel_values must be 32x32"):
        tf.function(lambda p: tiny.get_image_features(pixel_values=p))(bad_pixels(size=48))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tf.function(lambda i: tiny.get_text_features(input_ids=i))(bad_ids(seq=17))
    tower = TFCLIPTextModel(tiny.config.text_config)
    with pytest.raises(ValueError, match="input_ids must lie in"):
        tower(input_ids=np.full((1, 3), 49408))
    vision = TFCLIPVisionModel(tiny.config.vision_config)
    with pytest.raises(ValueError, match="You have to specify pixel_values"):
        vision()
