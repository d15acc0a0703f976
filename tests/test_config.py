import json

import pytest

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, ConfigError


def test_defaults_are_vit_b32():
    c = CLIPConfig()
    t, v = c.text_config, c.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads) == (
        512,
        2048,
        12,
        8,
    )
    assert (t.vocab_size, t.max_position_embeddings, t.hidden_act, t.layer_norm_eps) == (
        49408,
        77,
        "quick_gelu",
        1e-5,
    )
    assert (t.bos_token_id, t.eos_token_id, t.pad_token_id) == (49406, 49407, 1)
    assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads) == (
        768,
        3072,
        12,
        12,
    )
    assert (v.image_size, v.patch_size, v.num_channels) == (224, 32, 3)
    assert c.projection_dim == 512 and c.logit_scale_init_value == 2.6592


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(hidden_size=30, num_attention_heads=8), "divisible by num_attention_heads"),
        (dict(hidden_size=0), "hidden_size must be a positive integer"),
        (dict(hidden_act="swish"), "hidden_act 'swish'"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
    ],
)
def test_bad_text_config(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        CLIPTextConfig(**kwargs)


def test_bad_vision_config():
    with pytest.raises(ConfigError, match=r"image_size \(100\) must be divisible by patch_size \(32\)"):
        CLIPVisionConfig(image_size=100)


def test_not_json_and_not_clip(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        CLIPConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(ConfigError, match="not a CLIP config"):
        CLIPConfig.from_pretrained(tmp_path)


def test_legacy_config_dicts_and_unknown_keys(tmp_path):
    data = {
        "model_type": "clip",
        "text_config_dict": {"hidden_size": 64, "eos_token_id": 2},
        "vision_config_dict": {"patch_size": 16},
        "my_custom_key": [1, 2],
        "text_config": {"hidden_size": 32, "some_future_field": "x"},
    }
    c = CLIPConfig.from_dict(data)
    assert c.text_config.hidden_size == 64  # *_dict wins, as in transformers
    assert c.text_config.uses_legacy_eos_pooling
    assert c.vision_config.patch_size == 16
    c.save_pretrained(tmp_path)
    back = json.loads((tmp_path / "config.json").read_text())
    assert back["my_custom_key"] == [1, 2]
    assert back["text_config"]["some_future_field"] == "x"
    assert CLIPConfig.from_pretrained(tmp_path) == c


def test_tower_config_from_full_clip_config_takes_the_models_projection_dim(tmp_path):
    """A tower read from a full CLIP config.json must fit that checkpoint's projection weights."""
    CLIPConfig(text_config=dict(hidden_size=64), projection_dim=24).save_pretrained(tmp_path)
    text, vision = CLIPTextConfig.from_pretrained(tmp_path), CLIPVisionConfig.from_pretrained(tmp_path)
    assert (text.projection_dim, vision.projection_dim) == (24, 24)
    assert text.hidden_size == 64
