"""What every backend's suite shares: the tiny parity configs (in transformers' CLIPConfig keyword
form), the padded text batch, the numpy closeness check, and the bad inputs that must get the same
clear errors everywhere."""

import numpy as np

CONFIGS = {
    # OpenAI-style: quick_gelu, eos 49407 (full vocabulary), padded batch.
    "quick_gelu-eos49407": dict(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            hidden_act="quick_gelu",
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            hidden_act="quick_gelu",
        ),
        projection_dim=16,
    ),
    # Legacy eos_token_id=2 (argmax pooling), gelu, towers of different widths/depths/heads,
    # a 5x5 patch grid, another temperature.
    "gelu-eos2": dict(
        text_config=dict(
            vocab_size=120,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=3,
            max_position_embeddings=12,
            eos_token_id=2,
            bos_token_id=0,
            pad_token_id=1,
            hidden_act="gelu",
        ),
        vision_config=dict(
            hidden_size=40,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=30,
            patch_size=6,
            hidden_act="gelu",
        ),
        projection_dim=24,
        logit_scale_init_value=1.0,
    ),
}


def _with_tower_projection_dims(config: dict) -> dict:
    # The WithProjection classes read projection_dim from the tower's config (transformers does not
    # copy CLIPConfig.projection_dim into it), so the checkpoints here set it there too.
    dim = config["projection_dim"]
    return {
        **config,
        "text_config": {**config["text_config"], "projection_dim": dim},
        "vision_config": {**config["vision_config"], "projection_dim": dim},
    }


CONFIGS = {name: _with_tower_projection_dims(config) for name, config in CONFIGS.items()}


def bad_ids(batch=2, seq=5):
    return np.full((batch, seq), 7, np.int32)


def bad_pixels(batch=2, size=32):
    return np.zeros((batch, 3, size, size), np.float32)


# For a CLIPModel of CONFIGS["quick_gelu-eos49407"] (32x32 images, 16 positions, full vocabulary):
# (keyword arguments as numpy arrays, the message the ValueError must carry).
BAD_INPUTS = [
    (dict(input_ids=bad_ids(), pixel_values=bad_pixels(size=48)), "pixel_values must be 32x32"),
    (dict(input_ids=bad_ids(), pixel_values=np.zeros((2, 32, 32, 3), np.float32)), "channels-first"),
    (dict(input_ids=bad_ids(), pixel_values=np.zeros((3, 32, 32), np.float32)), "4 dimensions"),
    (dict(input_ids=np.full((2, 5), 49408), pixel_values=bad_pixels()), "input_ids must lie in"),
    (dict(input_ids=np.full((2, 5), -1), pixel_values=bad_pixels()), "input_ids must lie in"),
    (dict(input_ids=bad_ids(seq=17), pixel_values=bad_pixels()), "max_position_embeddings"),
    (dict(input_ids=bad_ids()[0], pixel_values=bad_pixels()), "2 dimensions"),
    (
        dict(input_ids=bad_ids(), attention_mask=np.ones((2, 4)), pixel_values=bad_pixels()),
        "attention_mask shape",
    ),
    (dict(input_ids=bad_ids(), position_ids=np.arange(4), pixel_values=bad_pixels()), "position_ids shape"),
    (
        dict(input_ids=bad_ids(), pixel_values=bad_pixels(batch=3), return_loss=True),
        "as many texts as images",
    ),
    (dict(pixel_values=bad_pixels()), "input_ids"),
    (dict(input_ids=bad_ids()), "pixel_values"),
    (
        dict(input_ids=bad_ids(), pixel_values=bad_pixels(size=4), interpolate_pos_encoding=True),
        "smaller than one",
    ),
]


def padded_texts(text_config) -> tuple[np.ndarray, np.ndarray]:
    """Three texts of different lengths, padded on the right (mask 0 on pads), as int64 arrays."""
    rng = np.random.default_rng(0)
    seq = text_config.max_position_embeddings - 2
    legacy = text_config.uses_legacy_eos_pooling
    eos = text_config.vocab_size - 1 if legacy else text_config.eos_token_id
    ids = rng.integers(3, min(text_config.vocab_size - 1, 1000), size=(3, seq))
    mask = np.ones_like(ids)
    for row, length in enumerate((seq, seq - 3, 4)):
        ids[row, length - 1] = eos
        ids[row, length:] = eos if not legacy else 1
        mask[row, length:] = 0
    return ids, mask


def assert_close(ours, theirs, what, atol=1e-5):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    diff = np.abs(ours - theirs).max() if ours.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"
