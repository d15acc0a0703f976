"""Our configs against transformers 4.57.6's config.json files, both ways.

Ours writes back every key/value of transformers' JSON unchanged. It may add the fields it knows
at their default values when transformers' file lacks them (it never does for the fields below:
transformers writes every field of its own config classes).
"""

import json
import random

import pytest

transformers = pytest.importorskip("transformers")

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig  # noqa: E402


def random_tower(rng, text):
    heads = rng.choice([1, 2, 4])
    fields = dict(
        hidden_size=heads * rng.choice([8, 16]),
        intermediate_size=rng.randint(1, 100),
        num_hidden_layers=rng.randint(1, 4),
        num_attention_heads=heads,
        hidden_act=rng.choice(["quick_gelu", "gelu"]),
        layer_norm_eps=rng.choice([1e-5, 1e-6]),
        attention_dropout=rng.choice([0.0, 0.1]),
        initializer_range=rng.random(),
        projection_dim=rng.randint(1, 64),
    )
    if text:
        vocab_size = rng.randint(10, 1000)
        fields.update(
            vocab_size=vocab_size,
            max_position_embeddings=rng.randint(4, 80),
            eos_token_id=rng.choice(
                [2, vocab_size - 1, 7]
            ),  # 2: legacy argmax pooling; within the vocabulary
            pad_token_id=rng.choice([0, 1]),
        )
    else:
        patch = rng.choice([4, 8])
        fields.update(patch_size=patch, image_size=patch * rng.randint(1, 8), num_channels=rng.choice([1, 3]))
    return fields


def written_by_transformers(config, folder) -> dict:
    config.save_pretrained(folder)
    return json.loads((folder / "config.json").read_text())


def assert_json_preserved(theirs: dict, ours: dict, path=""):
    for key, value in theirs.items():
        assert key in ours, f"{path}{key} dropped"
        if isinstance(value, dict):
            assert_json_preserved(value, ours[key], f"{path}{key}.")
        else:
            assert ours[key] == value, f"{path}{key}: ours {ours[key]!r}, transformers {value!r}"


@pytest.mark.parametrize("seed", range(4))
def test_clip_config_round_trip(seed, tmp_path):
    rng = random.Random(seed)
    config = transformers.CLIPConfig(
        text_config=random_tower(rng, text=True),
        vision_config=random_tower(rng, text=False),
        projection_dim=rng.randint(1, 64),
        logit_scale_init_value=rng.random() * 5,
        my_custom_field={"a": [1, 2]} if seed % 2 else "x",
    )
    theirs = written_by_transformers(config, tmp_path / "theirs")

    ours = CLIPConfig.from_pretrained(tmp_path / "theirs")
    assert ours.text_config.uses_legacy_eos_pooling == (config.text_config.eos_token_id == 2)
    ours.save_pretrained(tmp_path / "ours")
    ours_json = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert_json_preserved(theirs, ours_json)
    back = transformers.CLIPConfig.from_pretrained(tmp_path / "ours")
    assert back.to_dict() == config.to_dict()
    assert CLIPTextConfig.from_pretrained(tmp_path / "theirs").hidden_size == config.text_config.hidden_size
    assert CLIPVisionConfig.from_pretrained(tmp_path / "theirs").image_size == config.vision_config.image_size


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("which", ["text", "vision"])
def test_tower_config_round_trip(which, seed, tmp_path):
    rng = random.Random(seed)
    ours_class, their_class = {
        "text": (CLIPTextConfig, transformers.CLIPTextConfig),
        "vision": (CLIPVisionConfig, transformers.CLIPVisionConfig),
    }[which]
    config = their_class(**random_tower(rng, text=which == "text"), extra_knob=seed)
    theirs = written_by_transformers(config, tmp_path / "theirs")
    ours = ours_class.from_pretrained(tmp_path / "theirs")
    ours.save_pretrained(tmp_path / "ours")
    assert_json_preserved(theirs, json.loads((tmp_path / "ours" / "config.json").read_text()))
    assert their_class.from_pretrained(tmp_path / "ours").to_dict() == config.to_dict()


def test_ours_written_from_scratch_loads_in_transformers(tmp_path):
    ours = CLIPConfig.from_dict({"text_config": {"eos_token_id": 2}, "vision_config": {"patch_size": 16}})
    ours.save_pretrained(tmp_path)
    theirs = transformers.CLIPConfig.from_pretrained(tmp_path)
    assert theirs.text_config.eos_token_id == 2 and theirs.vision_config.patch_size == 16
    assert theirs.projection_dim == ours.projection_dim == 512
    assert theirs.logit_scale_init_value == ours.logit_scale_init_value
