"""clip_torch.fast: the oneDNN Linear layers give nn.Linear's numbers on the same, shared weights."""

import numpy as np
import pytest
import torch

from clip_core.config import CLIPConfig
from clip_core.weights import random_state
from clip_torch import CLIPModel, fast
from tests.tiny_configs import CONFIGS, assert_close, padded_texts

pytestmark = pytest.mark.skipif(not fast.available(), reason="this torch has no oneDNN linear op")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onednn_linears_equal_the_model_and_share_its_weights(name):
    config = CLIPConfig(**CONFIGS[name])
    model = CLIPModel(config)
    model.load_canonical_state(random_state(config, seed=1))
    quick = fast.onednn_linears(model)
    assert type(model.text_projection) is torch.nn.Linear  # the original is left as it was
    assert isinstance(quick.text_projection, fast.OneDNNLinear)
    assert quick.text_projection.weight is model.text_projection.weight  # no second copy
    assert quick.state_dict().keys() == model.state_dict().keys()
    ids, mask = map(torch.from_numpy, padded_texts(config.text_config))
    size = config.vision_config.image_size
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        for a, b in (
            (model.get_text_features(ids, mask), quick.get_text_features(ids, mask)),
            (model.get_image_features(pixels), quick.get_image_features(pixels)),
        ):
            assert_close(b.numpy(), a.numpy(), name)
    # with gradients on, the layers fall back to nn.Linear (oneDNN's op is for inference)
    out = quick.get_image_features(pixels).sum()
    out.backward()
    assert model.visual_projection.weight.grad is not None
