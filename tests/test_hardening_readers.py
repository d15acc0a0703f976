"""Hostile files: a seeded corruption fuzz over the four weight formats (and sharded folders) through
every loader, sharded indexes that lie, pytorch_model.bin records with a wrong CRC, configs with
absurd sizes or nesting, JSON nested too deep in every JSON we read.

What must hold: a clear error (CheckpointError / ConfigError naming the file) or a correct load; never
another exception type, a crash, a hang or a silently accepted lie. Data bytes that no format checks
(safetensors, h5, msgpack) are the checksum manifest's job (verify=True), tested here too.

CLIP_FUZZ_CASES=N runs N mutations per format instead of the default (more by hand).
"""

from __future__ import annotations

import faulthandler
import json
import os
import struct
import time
import zipfile

import numpy as np
import pytest

from clip_core.config import CLIPConfig, CLIPTextConfig, ConfigError
from clip_core.formats import open_checkpoint
from clip_core.formats.safetensors_format import write_safetensors_file
from clip_core.names import CheckpointError
from clip_core.pretrained import load_pretrained, save_pretrained
from clip_core.weights import load_state_dict, save_state_dict
from tests.fault_child import model
from tools import fuzz_checkpoints as fuzz

CASES = int(os.environ.get("CLIP_FUZZ_CASES", "45"))

# ---------------------------------------------------------------------------------------------------
# The corruption fuzz (tools/fuzz_checkpoints.py: the same with more cases, by hand)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One folder per format (and sharded safetensors / pytorch folders): config + weights."""
    return fuzz.build(str(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.parametrize(
    "fmt", ["safetensors", "pytorch", "tf", "flax", "safetensors-sharded", "pytorch-sharded"]
)
def test_corruption_fuzz_gives_clear_errors_or_correct_loads(saved, fmt, tmp_path):
    folders, state = saved
    if fmt not in folders:
        pytest.skip("pytorch_model.bin needs torch to read")
    faulthandler.dump_traceback_later(300, exit=True)  # a hang ends the run with a traceback
    try:
        counts, bad = fuzz.run(fmt, folders, state, CASES, str(tmp_path))
    finally:
        faulthandler.cancel_dump_traceback_later()
    summary = ", ".join(f"{loader} {dict(c)}" for loader, c in counts.items())
    assert not bad, f"{len(bad)} bad outcomes ({summary}):\n" + "\n".join(b[:300] for b in bad[:20])
    assert counts["eager"]["refused"] > 0 and counts["verify"]["refused"] > counts["eager"]["refused"]


def test_flipped_msgpack_header_bytes_are_checkpoint_errors(saved, tmp_path):
    folders, _ = saved
    source, _ = folders["flax"]
    with open(os.path.join(source, "flax_model.msgpack"), "rb") as f:
        data = f.read()
    bad = []
    for at in range(0, 400):
        for bit in (0, 3, 6):
            corrupt = bytearray(data)
            corrupt[at] ^= 1 << bit
            path = tmp_path / "flax_model.msgpack"
            path.write_bytes(bytes(corrupt))
            try:
                with open_checkpoint(path) as reader:
                    for name in reader:
                        reader.info(name)
                        reader[name]
            except CheckpointError as e:
                assert "flax_model.msgpack" in str(e)
            except Exception as e:  # noqa: BLE001
                bad.append(f"byte {at} bit {bit}: {type(e).__name__}: {e}")
    assert not bad, f"{len(bad)} flips raised other errors:\n" + "\n".join(bad[:10])


# ---------------------------------------------------------------------------------------------------
# Sharded indexes


@pytest.fixture
def sharded(tmp_path):
    config, state = model(1)
    folder = tmp_path / "sharded"
    save_pretrained(folder, config, state, max_shard_size=6000)
    if (folder / "checksums.sha256").exists():
        os.remove(folder / "checksums.sha256")  # these tests edit the files on purpose
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    return folder, index_path, index, state


def _write(index_path, index):
    index_path.write_text(json.dumps(index))


def test_index_naming_the_wrong_shard_is_refused(sharded):
    folder, index_path, index, _ = sharded
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][name] = shards[1]
    _write(index_path, index)
    with pytest.raises(CheckpointError, match=f"{index_path.name}.*{name}|{name}.*{index_path.name}"):
        load_state_dict(folder)


def test_index_missing_an_entry_is_refused(sharded):
    folder, index_path, index, _ = sharded
    name = sorted(index["weight_map"])[3]
    del index["weight_map"][name]
    _write(index_path, index)
    with pytest.raises(CheckpointError, match=name):
        load_state_dict(folder)


def test_index_listing_a_tensor_no_shard_holds_is_refused(sharded):
    folder, index_path, index, _ = sharded
    index["weight_map"]["text_model.extra.weight"] = sorted(set(index["weight_map"].values()))[0]
    _write(index_path, index)
    with pytest.raises(CheckpointError, match="text_model.extra.weight"):
        load_state_dict(folder)


def test_a_tensor_in_two_shards_is_refused(sharded):
    folder, index_path, index, state = sharded
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    second = [n for n, s in index["weight_map"].items() if s == shards[1]]
    write_safetensors_file({**state, name: state[name] + 1}, str(folder / shards[1]), second + [name])
    with pytest.raises(CheckpointError, match=name):
        load_state_dict(folder)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors", ""])
def test_shard_names_outside_the_folder_are_refused(sharded, shard):
    folder, index_path, index, _ = sharded
    index["weight_map"][sorted(index["weight_map"])[0]] = shard
    _write(index_path, index)
    with pytest.raises(CheckpointError, match="shard"):
        load_state_dict(folder)


@pytest.mark.parametrize("weight_map", [[], {"a": 1}, "x", None])
def test_malformed_weight_maps_are_refused(sharded, weight_map):
    folder, index_path, index, _ = sharded
    index["weight_map"] = weight_map
    _write(index_path, index)
    with pytest.raises(CheckpointError, match=index_path.name):
        load_state_dict(folder)


# ---------------------------------------------------------------------------------------------------
# pytorch_model.bin: CRC32 of every record


def _record_data_offset(path, record_suffix: str) -> tuple[int, int]:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(record_suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_length + extra_length, info.file_size


@pytest.mark.parametrize("record", ["data/3", "data.pkl"])
def test_bin_records_with_a_wrong_crc_are_refused(tmp_path, record):
    pytest.importorskip("torch")
    config, state = model(1)
    save_state_dict(state, tmp_path, formats="pytorch")
    path = tmp_path / "pytorch_model.bin"
    offset, size = _record_data_offset(path, record)
    data = bytearray(path.read_bytes())
    data[offset + size - 1] ^= 0x01  # the last byte of the record: a pickle's STOP or a tensor value
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_state_dict(tmp_path)


def test_bin_with_zip64_records_reads_back_in_torch_and_here(tmp_path, monkeypatch):
    """Files over 4 GiB need zip64 fields; written here for every record of a small file."""
    torch = pytest.importorskip("torch")
    import clip_core.formats.torch_format as torch_format

    monkeypatch.setattr(torch_format, "ZIP64_FROM", 0)
    state = model(1)[1]
    save_state_dict(state, tmp_path, formats="pytorch")
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin") as archive:
        assert archive.testzip() is None and all(i.file_size < 2**32 for i in archive.infolist())
    loaded = torch.load(tmp_path / "pytorch_model.bin", weights_only=True, mmap=True)
    assert all(np.array_equal(loaded[k].numpy(), v) for k, v in state.items())
    assert all(np.array_equal(a, state[k]) for k, a in load_state_dict(tmp_path).items())


# ---------------------------------------------------------------------------------------------------
# Configs


def _config_with(tmp_path, **text) -> str:
    config = model(1)[0].to_dict()
    config["text_config"].update(text)
    folder = tmp_path / "cfg"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_hidden_layers", 10**9),
        ("hidden_size", 2**40),
        ("intermediate_size", 2**40),
        ("vocab_size", 10**12),
        ("max_position_embeddings", 10**9),
        ("num_attention_heads", 2**31),
    ],
)
def test_absurd_sizes_are_config_errors_naming_the_field_and_the_file(tmp_path, field, value):
    folder = _config_with(tmp_path, **{field: value})
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_pretrained(folder, "clip")
    assert time.perf_counter() - start < 5, "the check must come before any work"
    assert field in str(info.value) and "config.json" in str(info.value)


def test_absurd_image_sizes_are_config_errors(tmp_path):
    config = model(1)[0].to_dict()
    config["vision_config"].update(image_size=2**20, patch_size=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="image_size.*config.json|config.json.*image_size"):
        CLIPConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "0", "-1e-5"])
def test_layer_norm_eps_must_be_finite_and_positive(tmp_path, value):
    config = json.dumps(model(1)[0].to_dict()).replace(
        '"layer_norm_eps": 1e-05', f'"layer_norm_eps": {value}', 1
    )
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        CLIPConfig.from_pretrained(tmp_path)


def test_eos_token_id_beyond_the_vocabulary_is_refused(tmp_path):
    folder = _config_with(tmp_path, eos_token_id=64)  # vocab_size 64
    with pytest.raises(ConfigError, match="eos_token_id.*config.json|config.json.*eos_token_id"):
        CLIPConfig.from_pretrained(folder)
    with pytest.raises(ConfigError, match="eos_token_id"):
        CLIPTextConfig(vocab_size=99, eos_token_id=120)
    assert CLIPTextConfig(vocab_size=99, eos_token_id=2).uses_legacy_eos_pooling  # legacy argmax pooling


def test_config_errors_name_the_file(tmp_path):
    folder = _config_with(tmp_path, hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="config.json"):
        CLIPConfig.from_pretrained(folder)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_too_deep_is_a_clear_error_everywhere(tmp_path):
    from clip_core.image_processing import CLIPImageProcessor

    (tmp_path / "config.json").write_text('{"text_config": ' + _deep(100_000) + "}")
    with pytest.raises(ConfigError, match="config.json"):
        CLIPConfig.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"size": ' + _deep(100_000) + "}")
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        CLIPImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": ' + _deep(100_000) + "}")
    with pytest.raises(CheckpointError, match="index.json"):
        load_state_dict(tmp_path / "model.safetensors.index.json")
    header = ('{"a": ' + _deep(100_000) + "}").encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_state_dict(tmp_path / "model.safetensors")


def test_json_that_is_not_an_object_where_one_is_expected(tmp_path):
    for text in ("[]", "3", '"x"', "null"):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ConfigError, match="config.json"):
            CLIPConfig.from_pretrained(tmp_path)


def test_h5_datasets_that_are_not_numbers_are_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("clip/tfclip_model/clip/logit_scale:0", data=np.array([b"abc"], dtype="S3"))
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        load_state_dict(path)
