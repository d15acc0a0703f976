"""Atomic writes and Hub-id resolution from a Hub-style cache built here (HF_HUB_OFFLINE=1)."""

import os

import numpy as np
import pytest

from clip_core.config import CLIPConfig
from clip_core.files import atomic_path, resolve_file, resolve_folder
from clip_core.weights import load_state_dict, save_state_dict
from tests.tiny_configs import clip_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new but incomplete")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


def build_hub_cache(root, repo_id, write_files):
    """The layout huggingface_hub keeps: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    write_files(snapshot)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hub_id_resolves_from_the_offline_cache(offline_hub):
    state = {"logit_scale": np.array(2.5, np.float32), "text_projection.weight": np.ones((2, 3), np.float32)}

    def files(folder):
        clip_config("small").save_pretrained(folder)
        save_state_dict(state, folder, formats=("safetensors", "flax"), max_shard_size=16)

    snapshot = build_hub_cache(offline_hub, "someorg/tiny-clip", files)
    assert resolve_file("someorg/tiny-clip", "config.json") == str(snapshot / "config.json")
    assert os.path.samefile(resolve_folder("someorg/tiny-clip"), snapshot)
    assert CLIPConfig.from_pretrained("someorg/tiny-clip") == clip_config("small")
    loaded = load_state_dict("someorg/tiny-clip")  # through the sharded safetensors index
    assert sorted(loaded) == sorted(state)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_hub_id_missing_from_the_offline_cache_is_a_clear_error(offline_hub):
    build_hub_cache(
        offline_hub, "someorg/only-config", lambda folder: clip_config("small").save_pretrained(folder)
    )
    with pytest.raises(FileNotFoundError, match="no weights file in someorg/only-config"):
        load_state_dict("someorg/only-config")
    with pytest.raises(FileNotFoundError, match="someorg/not-there"):
        CLIPConfig.from_pretrained("someorg/not-there")
    with pytest.raises(FileNotFoundError, match="someorg/not-there"):
        load_state_dict("someorg/not-there")


def test_explicit_cache_dir(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = build_hub_cache(
        tmp_path, "org/name", lambda folder: clip_config("small").save_pretrained(folder)
    )
    assert resolve_file("org/name", "config.json", cache_dir=tmp_path) == str(snapshot / "config.json")
