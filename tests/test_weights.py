"""Weight rules and checkpoint files without transformers: dtypes, shards, errors, atomicity."""

import json
import os

import numpy as np
import pytest

from clip_core.formats import open_checkpoint
from clip_core.weights import (
    CheckpointError,
    canonical_name_from_tf,
    canonical_shapes,
    load_state_dict,
    save_state_dict,
    select_for_model,
    tf_weight_name,
)
from tests.tiny_configs import assert_same_state, clip_config

ml_dtypes = pytest.importorskip("ml_dtypes")
ALL_FORMATS = ("safetensors", "pytorch", "tf", "flax")
FILES = {
    "safetensors": "model.safetensors",
    "pytorch": "pytorch_model.bin",
    "tf": "tf_model.h5",
    "flax": "flax_model.msgpack",
}


def random_state(dtype=np.float32, seed=0):
    # Not clip_core.weights.random_state: values spanning many binades, so that any rounding on the
    # way would change some bits.
    rng = np.random.default_rng(seed)
    shapes = canonical_shapes(clip_config("small"), "clip")
    decades = 4 if np.dtype(dtype) == np.float16 else 30
    return {
        k: (rng.standard_normal(s) * 10.0 ** rng.integers(-decades, decades, size=s)).astype(dtype)
        for k, s in shapes.items()
    }


# ---------------------------------------------------------------------------------------------
# Rules


@pytest.mark.parametrize(
    "name, tf_name",
    [
        (
            "text_model.encoder.layers.10.self_attn.q_proj.weight",
            "text_model/encoder/layers_._10/self_attn/q_proj/kernel:0",
        ),
        ("text_model.encoder.layers.0.layer_norm1.bias", "text_model/encoder/layers_._0/layer_norm1/beta:0"),
        ("text_model.final_layer_norm.weight", "text_model/final_layer_norm/gamma:0"),
        ("text_model.embeddings.token_embedding.weight", "text_model/embeddings/token_embedding/weight:0"),
        (
            "text_model.embeddings.position_embedding.weight",
            "text_model/embeddings/position_embedding/embeddings:0",
        ),
        ("vision_model.embeddings.class_embedding", "vision_model/embeddings/class_embedding:0"),
        (
            "vision_model.embeddings.patch_embedding.weight",
            "vision_model/embeddings/patch_embedding/kernel:0",
        ),
        ("vision_model.pre_layrnorm.weight", "vision_model/pre_layrnorm/gamma:0"),
        ("visual_projection.weight", "visual_projection/kernel:0"),
        ("logit_scale", "logit_scale:0"),
    ],
)
def test_tf_names_both_ways(name, tf_name):
    # Expected names are copied from a tf_model.h5 written by transformers 4.57.6 (CLIP-FACTS.md).
    assert tf_weight_name(name) == tf_name
    assert canonical_name_from_tf("clip/tfclip_model/clip/" + tf_name) == name


def test_select_for_model_reports_names_and_shapes():
    cfg = clip_config("small")
    state = random_state()
    state["text_model.embeddings.position_ids"] = np.arange(16)[None]  # old buffer: ignored
    assert sorted(select_for_model(state, cfg, "clip")) == sorted(canonical_shapes(cfg, "clip"))
    # A tower from the full checkpoint: the other tower is dropped silently.
    text = select_for_model(state, cfg.text_config, "text")
    assert all(k.startswith("text_model.") for k in text)
    del state["text_model.final_layer_norm.bias"]
    state["text_model.encoder.layers.0.mlp.fc1.weight"] = np.zeros((5, 32), np.float32)
    state["something.else"] = np.zeros(3)
    with pytest.raises(CheckpointError) as e:
        select_for_model(state, cfg, "clip")
    msg = str(e.value)
    assert "missing 1 tensor(s): text_model.final_layer_norm.bias" in msg
    assert "unexpected 1 tensor(s): something.else" in msg
    assert "text_model.encoder.layers.0.mlp.fc1.weight: checkpoint (5, 32), model (37, 32)" in msg


@pytest.mark.parametrize("kind", ["clip", "text_with_projection", "vision"])
def test_random_state_fits_each_model_kind(kind):
    from clip_core.weights import random_state

    cfg = (
        clip_config("small")
        if kind == "clip"
        else getattr(clip_config("small"), f"{kind.split('_')[0]}_config")
    )
    state = random_state(cfg, kind, seed=3)
    assert select_for_model(state, cfg, kind).keys() == canonical_shapes(cfg, kind).keys()
    assert all(v.dtype == np.float32 for v in state.values())
    norm = "text_model.final_layer_norm" if kind.startswith("text") else "vision_model.pre_layrnorm"
    assert np.all(state[f"{norm}.weight"] == 1) and np.all(state[f"{norm}.bias"] == 0)
    again, other = random_state(cfg, kind, seed=3), random_state(cfg, kind, seed=4)
    assert all(np.array_equal(again[k], v) for k, v in state.items())
    assert not all(np.array_equal(other[k], v) for k, v in state.items())


# ---------------------------------------------------------------------------------------------
# Round trips, bit for bit


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_format_round_trips_bit_exact(dtype, tmp_path):
    pytest.importorskip("torch")
    state = random_state(np.dtype(getattr(ml_dtypes, dtype, dtype)))
    for fmt in ALL_FORMATS:
        save_state_dict(state, tmp_path / fmt, formats=fmt)
        assert_same_state(load_state_dict(tmp_path / fmt / FILES[fmt]), state)


def test_bf16_files_read_by_the_reference_libraries(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    state = random_state(ml_dtypes.bfloat16)
    save_state_dict(state, tmp_path, formats=ALL_FORMATS)
    name = "text_model.encoder.layers.1.mlp.fc1.weight"
    bits = state[name].view(np.int16)
    by_safetensors = load_file(tmp_path / "model.safetensors")[name]
    by_torch = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)[name]
    for tensor in (by_safetensors, by_torch):
        assert tensor.dtype == torch.bfloat16
        assert np.array_equal(tensor.view(torch.int16).numpy(), bits)
    import h5py  # h5py (and so transformers' TF loader) sees our bf16 type as exact float32 values

    with h5py.File(tmp_path / "tf_model.h5", "r") as f:
        kernel = f["clip/tfclip_model/clip/text_model/encoder/layers_._1/mlp/fc1/kernel:0"][()]
    assert np.array_equal(kernel, state[name].astype(np.float32).T)
    flax_serialization = pytest.importorskip("flax.serialization")
    restored = flax_serialization.msgpack_restore((tmp_path / "flax_model.msgpack").read_bytes())
    flax_kernel = np.asarray(restored["text_model"]["encoder"]["layers"]["1"]["mlp"]["fc1"]["kernel"])
    assert flax_kernel.dtype.name == "bfloat16" and flax_kernel.T.tobytes() == state[name].tobytes()


def test_sharded_safetensors_and_bin_round_trip(tmp_path):
    pytest.importorskip("torch")
    state = random_state()
    written = save_state_dict(state, tmp_path, formats=("safetensors", "pytorch"), max_shard_size="20KB")
    for stem, ext in (("model", "safetensors"), ("pytorch_model", "bin")):
        index = json.loads(
            (
                tmp_path / f"{FILES['safetensors' if ext == 'safetensors' else 'pytorch']}.index.json"
            ).read_text()
        )
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 2 and shards[0] == f"{stem}-00001-of-{len(shards):05d}.{ext}"
        assert sorted(index["weight_map"]) == sorted(state)
        assert index["metadata"]["total_size"] == sum(a.nbytes for a in state.values())
        for shard in shards:  # tensor bytes per shard stay under the limit; a larger tensor is alone
            names = [k for k, v in index["weight_map"].items() if v == shard]
            assert sum(state[k].nbytes for k in names) <= 20_000 or len(names) == 1
        assert all(str(tmp_path / s) in written for s in shards)
    assert_same_state(load_state_dict(tmp_path), state)  # the safetensors index is preferred
    assert_same_state(load_state_dict(tmp_path / "pytorch_model.bin.index.json"), state)
    # Saving unsharded again removes the stale shards and index.
    save_state_dict(state, tmp_path, formats="safetensors")
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("model")) == ["model.safetensors"]


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "int8", "bool"])
def test_bin_holds_dtypes_with_and_without_a_typed_torch_storage(dtype, tmp_path):
    """pytorch_model.bin is written record by record; dtypes torch has no typed storage class for
    (float8, uint16 and wider) are pickled as torch.save pickles them, on an untyped storage."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, dtype):
        pytest.skip(f"this torch has no {dtype}")
    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, 5)).astype(np.float32) * 8
    state = {
        "a": array.astype(getattr(ml_dtypes, dtype, dtype)),
        "b.c": np.arange(7).astype(getattr(ml_dtypes, dtype, dtype)),
    }
    save_state_dict(state, tmp_path, formats="pytorch")
    assert_same_state(load_state_dict(tmp_path), state)
    by_torch = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    for name, want in state.items():
        got = by_torch[name]
        assert got.dtype == getattr(torch, dtype) and tuple(got.shape) == want.shape
        bits = f"int{8 * want.itemsize}" if dtype.startswith("float8") else dtype
        assert got.view(getattr(torch, bits)).numpy().tobytes() == want.tobytes(), name


def test_streaming_reader_keeps_names_and_shapes_without_loading(tmp_path):
    state = random_state()
    save_state_dict(state, tmp_path, formats=("flax", "tf"))
    for file in ("flax_model.msgpack", "tf_model.h5"):
        with open_checkpoint(tmp_path / file) as reader:
            assert sorted(reader) == sorted(state)
            assert reader.info("vision_model.embeddings.patch_embedding.weight") == (
                (32, 3, 8, 8),
                np.float32,
            )
            assert reader.info("logit_scale") == ((), np.float32)


# ---------------------------------------------------------------------------------------------
# Bad files


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("keep", [0.0, 0.01, 0.6])
def test_truncated_files_raise_checkpoint_error_naming_the_file(fmt, keep, tmp_path):
    if fmt == "pytorch":
        pytest.importorskip("torch")
    save_state_dict(random_state(), tmp_path, formats=fmt)
    path = tmp_path / FILES[fmt]
    _truncate(path, keep)
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_state_dict(path)


def test_garbage_and_missing_shard(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_state_dict(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    written = save_state_dict(random_state(), tmp_path, max_shard_size="40KB")
    second = os.path.basename(written[1])
    assert second.startswith("model-00002-of-")
    os.remove(tmp_path / second)
    with pytest.raises(CheckpointError, match=f"{second}, which is missing"):
        load_state_dict(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights file in"):
        load_state_dict(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a local folder, a file, nor a Hub model id"):
        load_state_dict(tmp_path / "nothing_here")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_bin_with_pickled_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"logit_scale": torch.tensor(1.0), "x": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(tmp_path)


def test_bin_without_torch_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    state = random_state()
    save_state_dict(state, tmp_path, formats=("pytorch", "tf"))
    import clip_core.formats as formats

    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    monkeypatch.setattr(formats, "_torch_available", lambda: False)
    assert_same_state(load_state_dict(tmp_path), state)  # falls back to tf_model.h5
    with pytest.raises(CheckpointError, match="needs PyTorch"):
        load_state_dict(tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="needs PyTorch"):
        save_state_dict(state, tmp_path / "out", formats="pytorch")


def test_bad_save_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown weights format"):
        save_state_dict(random_state(), tmp_path, formats="onnx")
    with pytest.raises(ValueError, match="model_kind"):
        save_state_dict(random_state(), tmp_path, formats="tf", model_kind="bert")
    with pytest.raises(ValueError, match="max_shard_size"):
        save_state_dict(random_state(), tmp_path, max_shard_size="lots")


# ---------------------------------------------------------------------------------------------
# Atomic writes


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize(
    "fmt, target, attribute",
    [
        ("safetensors", "clip_core.formats.safetensors_format", "little_endian_bytes"),
        ("pytorch", "clip_core.formats.torch_format", "little_endian_bytes"),
        ("tf", "clip_core.formats.h5_format", "to_tf_layout"),
        ("flax", "clip_core.formats.msgpack_format", "to_channels_last"),
    ],
)
def test_failed_save_leaves_the_previous_file_intact(fmt, target, attribute, tmp_path, monkeypatch):
    if fmt == "pytorch":
        pytest.importorskip("torch")
    import importlib

    old = random_state(seed=1)
    save_state_dict(old, tmp_path, formats=fmt)
    before = (tmp_path / FILES[fmt]).read_bytes()
    module = importlib.import_module(target)
    real = getattr(module, attribute)
    calls = []

    def fail_midway(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:  # after some tensors were written
            raise _Boom("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attribute, fail_midway)
    with pytest.raises(_Boom):
        save_state_dict(random_state(seed=2), tmp_path, formats=fmt)
    assert (tmp_path / FILES[fmt]).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [FILES[fmt]]  # no temporary file left behind
    assert_same_state(load_state_dict(tmp_path), old)
