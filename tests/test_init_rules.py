"""Random initialisation: one table of rules (clip_core.modeling_utils.init_rule), checked against
transformers' own PyTorch init, and followed by all three backends' random init."""

import numpy as np
import pytest

from clip_core.config import CLIPConfig
from clip_core.modeling_utils import init_rule
from clip_core.names import canonical_shapes
from tests.tiny_configs import WIDE

# transformers' CLIPConfig always sets initializer_factor = 1.0; a tower config keeps its own.
VISION_TOWER = dict(WIDE["vision_config"], initializer_factor=1.5, initializer_range=0.05, projection_dim=40)


def check_state(state, config, what, kind="clip"):
    """Every tensor follows its rule: exact constants (to float32 rounding), and a normal's std
    within 12 % (35 % for tensors under 1000 values) with a mean near 0."""
    assert set(state) == set(canonical_shapes(config, kind)), what
    for name, array in state.items():
        array = np.asarray(array, np.float64)
        rule, value = init_rule(name, config)
        if rule != "normal":
            np.testing.assert_allclose(array, value, rtol=1e-6, atol=0, err_msg=f"{what}: {name}")
            continue
        tolerance = 0.12 if array.size >= 1000 else 0.35
        assert abs(array.std() / value - 1) < tolerance, (
            f"{what}: {name} std {array.std():.4g} vs {value:.4g}"
        )
        assert abs(array.mean()) < 4 * value / np.sqrt(array.size) + 1e-6, f"{what}: {name} mean"


def test_rules_match_transformers_init():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from clip_core.config import CLIPVisionConfig

    torch.manual_seed(0)
    for model, config, kind in (
        (transformers.CLIPModel(transformers.CLIPConfig(**WIDE)), CLIPConfig.from_dict(WIDE), "clip"),
        (
            transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**VISION_TOWER)),
            CLIPVisionConfig(**VISION_TOWER),
            "vision_with_projection",
        ),
    ):
        state = {
            k: v.detach().numpy() for k, v in model.state_dict().items() if not k.endswith("position_ids")
        }
        check_state(state, config, f"transformers {kind}", kind)


def test_torch_init_follows_rules():
    torch = pytest.importorskip("torch")
    from clip_torch import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig.from_dict(WIDE))
    check_state(model.canonical_state(), model.config, "clip_torch")


def test_tf_init_follows_rules():
    keras = pytest.importorskip("keras")
    from clip_tf import TFCLIPModel

    keras.utils.set_random_seed(0)
    model = TFCLIPModel(CLIPConfig.from_dict(WIDE))
    check_state(model.canonical_state(), model.config, "clip_tf")


def test_flax_init_follows_rules():
    pytest.importorskip("jax")
    from clip_flax import FlaxCLIPModel

    model = FlaxCLIPModel(CLIPConfig.from_dict(WIDE), seed=0)
    check_state(model.canonical_state(), model.config, "clip_flax")
