"""The tiny configs every backend's parity suite runs, in transformers' CLIPConfig keyword form."""

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
