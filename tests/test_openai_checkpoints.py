import numpy as np
import pytest

from clip_core.formats import open_checkpoint
from clip_core.openai_checkpoints import OpenAIView, infer_config, to_canonical
from clip_core.weights import CheckpointError, canonical_shapes, select_for_model, write_safetensors
from tests.openai_reference import random_openai_state_dict


@pytest.mark.parametrize("prefix", ["", "module."])
def test_converted_state_fits_inferred_config(prefix):
    sd = random_openai_state_dict(prefix=prefix)
    sd[prefix + "input_resolution"] = np.asarray(32)  # OpenAI's JIT archives carry these scalars
    config = infer_config({k: v.shape for k, v in sd.items()})
    t, v = config.text_config, config.vision_config
    assert (t.hidden_size, t.num_attention_heads, t.num_hidden_layers, t.vocab_size) == (64, 1, 2, 1000)
    assert (t.max_position_embeddings, t.intermediate_size) == (16, 256)
    assert (v.hidden_size, v.num_attention_heads, v.num_hidden_layers) == (128, 2, 3)
    assert (v.image_size, v.patch_size, config.projection_dim) == (32, 8, 48)
    state = select_for_model(to_canonical(sd), config, "clip")
    assert set(state) == set(canonical_shapes(config))


def test_fused_in_proj_splits_into_q_k_v_in_that_order():
    sd = random_openai_state_dict()
    state = to_canonical(sd)
    fused = sd["transformer.resblocks.1.attn.in_proj_weight"]
    d = fused.shape[1]
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        got = state[f"text_model.encoder.layers.1.self_attn.{proj}.weight"]
        np.testing.assert_array_equal(got, fused[i * d : (i + 1) * d])
    np.testing.assert_array_equal(state["visual_projection.weight"], sd["visual.proj"].T)


def test_unknown_tensor_and_wrong_model_are_named():
    sd = random_openai_state_dict()
    sd["visual.transformer.resblocks.0.attn.rogue"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="visual.transformer.resblocks.0.attn.rogue"):
        to_canonical(sd)
    with pytest.raises(ValueError, match="not an OpenAI-format CLIP state dict"):
        infer_config({"encoder.weight": (3, 3)})


def test_lazy_view_and_eager_renaming_agree(tmp_path):
    """OpenAIView (what clip-convert reads through) and to_canonical share one mapping."""
    sd = random_openai_state_dict(prefix="module.")
    sd["module.input_resolution"] = np.asarray(32)
    write_safetensors(sd, tmp_path / "sd.safetensors")
    eager = to_canonical(sd)
    with OpenAIView(open_checkpoint(tmp_path / "sd.safetensors"), prefix="module.") as view:
        assert sorted(view) == sorted(eager)
        for name in view:
            assert view.info(name) == (eager[name].shape, eager[name].dtype), name
            np.testing.assert_array_equal(view[name], eager[name], err_msg=name)
    rogue = {"visual.transformer.resblocks.0.attn.rogue": np.zeros(3, np.float32)}
    write_safetensors(rogue, tmp_path / "rogue.safetensors")
    with pytest.raises(CheckpointError, match=r"rogue\.safetensors: unknown tensor .*attn\.rogue"):
        OpenAIView(open_checkpoint(tmp_path / "rogue.safetensors"))
