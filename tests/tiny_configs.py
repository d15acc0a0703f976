"""What the test suites share, as plain names (the fixtures built from them are in tests/conftest.py).

- The tiny configs, in transformers' CLIPConfig keyword form, each declared once: CONFIGS (the
  parity pair every backend suite runs on), SMALL (checkpoint files and conversion), MICRO
  (compiled training steps), WIDE (init statistics); ``clip_config(name)`` gives our CLIPConfig.
- Inputs: ``padded_texts`` (texts of different lengths, padded), ``random_pixels``, ``clip_batch``.
- Checks: ``assert_close`` (numpy, torch, TF or JAX values, max abs diff), ``assert_same_state``
  (state dicts bit for bit), ``assert_tower_output``; ``BAD_INPUTS``, the bad inputs that must get
  the same clear errors in every backend.
- ``Reference``: a reference checkpoint folder with its config and the parity suites' inputs.

Plain functions, so that scripts run outside pytest (tests/training_sharded_step.py) use them too.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from clip_core.config import CLIPConfig

ATOL = 1e-5  # fp32 parity on the tiny configs

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

# Checkpoint files and conversion: two layers per tower (a layer index above 0 in every name
# scheme), an odd MLP width (37) so that no kernel is square and a missed transpose changes a shape,
# a small vocabulary whose own bos/eos ids end the texts.
_SMALL_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
SMALL = dict(
    text_config=dict(
        _SMALL_TOWER,
        vocab_size=99,
        max_position_embeddings=16,
        bos_token_id=97,
        eos_token_id=98,
        pad_token_id=1,
    ),
    vision_config=dict(_SMALL_TOWER, image_size=32, patch_size=8),
    projection_dim=24,
)

# Compiled training steps (Keras fit, the Flax train step, clip-finetune-flax): one layer per tower,
# 8 tokens, 16 px, since tracing a train step costs seconds per layer on a busy CPU. The full
# vocabulary, so that the real tokenizer's captions fit.
_MICRO_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
MICRO = dict(
    text_config=dict(_MICRO_TOWER, max_position_embeddings=8),
    vision_config=dict(_MICRO_TOWER, image_size=16, patch_size=8),
    projection_dim=32,
)

# Random-init statistics: wide enough that a sample std is within a few percent of its true value.
WIDE = dict(
    text_config=dict(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        vocab_size=1000,
    ),
    vision_config=dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
    ),
    projection_dim=48,
)


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
SMALL, MICRO = _with_tower_projection_dims(SMALL), _with_tower_projection_dims(MICRO)
NAMED = {**CONFIGS, "small": SMALL, "micro": MICRO, "wide": WIDE}

# The logit_scale of each reference checkpoint (tests/conftest.py): not the configs' initial value.
LOGIT_SCALES = {"quick_gelu-eos49407": 2.9, "gelu-eos2": 1.3, "small": 2.9}


def clip_config(name: str = "quick_gelu-eos49407") -> CLIPConfig:
    """Our CLIPConfig for a name of NAMED (the parity pair, "small", "micro", "wide")."""
    return CLIPConfig.from_dict(NAMED[name])


# ---------------------------------------------------------------------------------------------
# Inputs


def padded_texts(text_config, lengths=None, seq=None, seed=0, bos=False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask (int64) of texts of the given lengths, padded on the right to ``seq``
    (mask 0 on pads). By default three texts of seq, seq - 3 and 4 tokens, seq being
    max_position_embeddings - 2. Each text ends at its end-of-text token: eos_token_id, or for
    legacy configs (eos_token_id 2, argmax pooling) the largest id, with pads of 1. ``bos``: each
    text starts with bos_token_id."""
    rng = np.random.default_rng(seed)
    seq = seq or text_config.max_position_embeddings - 2
    lengths = (seq, seq - 3, 4) if lengths is None else lengths
    legacy = text_config.uses_legacy_eos_pooling
    eos = text_config.vocab_size - 1 if legacy else text_config.eos_token_id
    ids = rng.integers(3, min(text_config.vocab_size - 1, 1000), size=(len(lengths), seq))
    mask = np.ones_like(ids)
    for row, length in enumerate(lengths):
        if bos:
            ids[row, 0] = text_config.bos_token_id
        ids[row, length - 1] = eos
        ids[row, length:] = eos if not legacy else 1
        mask[row, length:] = 0
    return ids, mask


def random_pixels(vision_config, batch=3, seed=1, height=None, width=None) -> np.ndarray:
    """Standard normal float32 pixel_values [batch, 3, height, width], image_size square by default."""
    height = height or vision_config.image_size
    width = width or vision_config.image_size
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


def clip_batch(config: CLIPConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A training batch (int32 ids): texts of random lengths from bos to eos over all positions, and images.

    Drawn row by row from one generator, as it always was: test_training's bound of 1e-5 on the
    parameters after one sharded Adam step holds for these batches, while a batch with a gradient
    component near Adam's epsilon moves that parameter by up to the learning rate (another draw
    of the same kind gave 1.5e-5)."""
    rng = np.random.default_rng(seed)
    t, v = config.text_config, config.vision_config
    length = t.max_position_embeddings
    ids = np.full((batch, length), t.eos_token_id, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i in range(batch):
        n = int(rng.integers(3, length + 1))
        ids[i, 0] = t.bos_token_id
        ids[i, 1 : n - 1] = rng.integers(0, 1000, n - 2)
        mask[i, :n] = 1
    pixels = rng.normal(0, 1, (batch, 3, v.image_size, v.image_size)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


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


# ---------------------------------------------------------------------------------------------
# Checks


def as_numpy(value) -> np.ndarray:
    """A numpy array of a numpy, TF or JAX value, or of a torch tensor (off the graph; half types as float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def assert_close(ours, theirs, what="values", atol=ATOL):
    """Same shape, and a max abs difference (in float64) of at most ``atol``."""
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max() if ours.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


def assert_same_state(ours: dict, reference: dict):
    """The same names, and per name the same dtype, shape and bytes."""
    assert sorted(ours) == sorted(reference), sorted(set(ours) ^ set(reference))
    for name, want in reference.items():
        got = np.asarray(ours[name])
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
        assert got.tobytes() == want.tobytes(), name


def assert_tower_output(ours, theirs, what, fields=("hidden_states", "attentions")):
    """BaseModelOutputWithPooling fields (pooler_output where ``theirs`` has one), every hidden state
    and attention map."""
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, f"{what}.last_hidden_state")
    if hasattr(theirs, "pooler_output"):
        assert_close(ours.pooler_output, theirs.pooler_output, f"{what}.pooler_output")
    for field in fields:
        assert len(getattr(ours, field)) == len(getattr(theirs, field)), f"{what}.{field}"
        for i, (a, b) in enumerate(zip(getattr(ours, field), getattr(theirs, field))):
            assert_close(a, b, f"{what}.{field}[{i}]")


# ---------------------------------------------------------------------------------------------
# The parity suites' reference


class Reference:
    """A reference checkpoint (tests/conftest.py's ``reference_folder``, a folder named after its
    config) with its config and the inputs the parity suites feed: ``padded_texts`` as int32,
    ``random_pixels``. ``torch_model``: transformers' PyTorch CLIPModel on it, loaded on first use."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.name = os.path.basename(self.folder)
        self.config = CLIPConfig.from_pretrained(self.folder)
        ids, mask = padded_texts(self.config.text_config)
        self.input_ids, self.attention_mask = ids.astype(np.int32), mask.astype(np.int32)
        self.pixel_values = random_pixels(self.config.vision_config)

    @functools.cached_property
    def torch_model(self):
        import transformers

        return transformers.CLIPModel.from_pretrained(self.folder).eval()

    @staticmethod
    def torch_inputs(**arrays):
        """numpy inputs as torch tensors (ids, masks and positions as int64)."""
        import torch

        return {
            k: torch.from_numpy(np.asarray(v)).long() if "ids" in k or "mask" in k else torch.from_numpy(v)
            for k, v in arrays.items()
        }
