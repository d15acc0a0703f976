"""clip_core.tensors: return_tensors conversion and the batch dicts (BatchFeature, BatchEncoding)."""

from __future__ import annotations

import enum
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clip_core.tensors import BatchEncoding, BatchFeature, as_tensor, tensor_type_name, to_framework


class FakeTensorType(str, enum.Enum):  # the shape of transformers' TensorType
    NUMPY = "np"
    PYTORCH = "pt"
    MLX = "mlx"


def test_tensor_type_name():
    assert tensor_type_name(None) is None
    for name in ("np", "pt", "tf", "jax"):
        assert tensor_type_name(name) == name
    assert tensor_type_name(FakeTensorType.PYTORCH) == "pt"
    for bad in ("torch", "mx", FakeTensorType.MLX, 3):
        with pytest.raises(ValueError, match="return_tensors"):
            tensor_type_name(bad)


def test_numpy_stays_the_same_array():
    array = np.zeros((2, 3), np.float32)
    assert to_framework(array, None) is array
    assert to_framework(array, "np") is array
    assert as_tensor([[1, 2]], None) == [[1, 2]]
    ids = as_tensor([[1, 2]], FakeTensorType.NUMPY)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64


def test_attribute_access_and_pickling():
    for cls in (BatchFeature, BatchEncoding):
        batch = cls(input_ids=[[1, 2]])
        assert batch.input_ids is batch["input_ids"] and batch.data == {"input_ids": [[1, 2]]}
        with pytest.raises(AttributeError, match="pixel_values"):
            _ = batch.pixel_values
        assert not hasattr(batch, "pixel_values")
        again = pickle.loads(pickle.dumps(batch))
        assert type(again) is cls and again == batch and again.input_ids == [[1, 2]]


def test_batch_feature_converts_arrays_only():
    pixels = np.ones((1, 3, 2, 2), np.float32)
    batch = BatchFeature(pixel_values=pixels, note=[1, 2]).convert_to_tensors("np")
    assert batch.pixel_values is pixels and batch.note == [1, 2]
    assert BatchFeature(note=[1]).convert_to_tensors(None).note == [1]


def test_batch_encoding_converts_every_value_to_int64():
    batch = BatchEncoding(input_ids=[[1, 2], [3, 4]], length=[2, 2]).convert_to_tensors("np")
    assert batch.input_ids.dtype == np.int64 and batch.length.tolist() == [2, 2]
    assert BatchEncoding(input_ids=[[1]]).convert_to_tensors(None).input_ids == [[1]]
    with pytest.raises(ValueError, match="return_tensors"):
        BatchEncoding(input_ids=[[1]]).convert_to_tensors("mx")


def test_torch():
    torch = pytest.importorskip("torch")
    pixels = np.ones((1, 3, 2, 2), np.float32)[..., ::-1]  # not contiguous
    batch = BatchFeature(pixel_values=pixels).convert_to_tensors("pt")
    assert batch.pixel_values.dtype == torch.float32 and batch.pixel_values.is_contiguous()
    assert batch.to("cpu").to(torch.float64).pixel_values.dtype == torch.float64
    ids = BatchEncoding(input_ids=[[1, 2]]).convert_to_tensors("pt").input_ids
    assert ids.dtype == torch.int64


def test_jax():
    pytest.importorskip("jax")
    pixels = to_framework(np.ones((2, 2), np.float32), "jax")
    assert str(pixels.dtype) == "float32"
    ids = as_tensor([[1, 2]], "jax")  # int32 unless jax_enable_x64, as jnp.asarray gives
    assert np.asarray(ids).tolist() == [[1, 2]] and str(ids.dtype) in ("int32", "int64")


@pytest.mark.slow
def test_tensorflow():  # tensorflow takes ~20 s to import
    tf = pytest.importorskip("tensorflow")
    assert to_framework(np.ones((2, 2), np.float32), "tf").dtype == tf.float32
    assert as_tensor([[1, 2]], "tf").dtype == tf.int32  # as transformers (tf.constant of Python ints)


def test_clip_core_imports_no_framework():
    code = (
        "import sys\n"
        "import clip_core.tensors, clip_core.image_processing, clip_core.processing, clip_core.tokenization\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'keras', 'flax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
