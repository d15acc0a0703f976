"""Atomic writes and Hub-id resolution from a Hub-style cache built here (HF_HUB_OFFLINE=1)."""

import os
from pathlib import Path

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


# ---------------------------------------------------------------------------------------------------
# Owners of temporaries, renames that never replace, JSON limits


def test_temporary_names_carry_their_owner_and_dead_owners_are_found(tmp_path):
    import subprocess
    import sys

    from clip_core.files import owner_state, owner_tag, parse_temporary, remove_stale_temporaries

    with atomic_path(tmp_path / "model.safetensors") as tmp:
        info = parse_temporary(os.path.basename(tmp))
        assert info["base"] == "model.safetensors" and info["pid"] == os.getpid()
        assert owner_state(info, tmp) == "alive"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host, _, start = owner_tag().split(".")
    names = {
        "dead": f".model.safetensors.{host}.{int(dead.stdout)}.{start}.abc123.tmp",
        "reused": f".config.json.{host}.{os.getpid()}.{int(start) + 1}.abc123.tmp",  # our pid, another start
        "other-host": ".config.json.elsewhere.1.1.abc123.tmp",
        "not-ours": ".model.safetensors.partial",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    removed, kept = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([names["dead"], names["reused"]])
    assert kept == [names["other-host"]]
    assert (tmp_path / names["not-ours"]).exists()
    os.utime(tmp_path / names["other-host"], (0, 0))  # older than STALE_AFTER_SECONDS
    assert remove_stale_temporaries(tmp_path) == ([names["other-host"]], [])


def without_renameat2(monkeypatch) -> None:
    """clip_core.files as on a system or file system without renameat2 (the portable fallbacks)."""
    import errno

    import clip_core.files as files

    def unsupported(*args):
        raise OSError(errno.EINVAL, "unsupported")

    monkeypatch.setattr(files, "_renameat2", unsupported)


@pytest.mark.parametrize("portable", [False, True], ids=["renameat2", "mkdir-claim"])
def test_rename_noreplace_never_replaces_even_an_empty_folder(tmp_path, monkeypatch, portable):
    import clip_core.files as files

    if portable:
        without_renameat2(monkeypatch)
    source = tmp_path / "new"
    source.mkdir()
    (source / "f").write_text("new")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        files.rename_noreplace(str(source), str(tmp_path / "taken"))  # os.rename would replace it
    assert (source / "f").exists() and os.listdir(tmp_path / "taken") == []
    files.rename_noreplace(str(source), str(tmp_path / "free"))
    assert (tmp_path / "free" / "f").read_text() == "new" and not source.exists()
    (tmp_path / "other").mkdir()
    swapped = files.exchange(str(tmp_path / "free"), str(tmp_path / "other"))
    assert swapped != portable
    if swapped:
        assert (tmp_path / "other" / "f").exists() and os.listdir(tmp_path / "free") == []


def test_read_json_limits(tmp_path):
    from clip_core.files import MAX_JSON_DEPTH, read_json

    path = tmp_path / "x.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="x.json.*nested"):
        read_json(path)
    path.write_text("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="deeper than"):
        read_json(path)
    path.write_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert read_json(path) is not None
    path.write_text('{"a": "' + "x" * 100 + '"}')
    with pytest.raises(ValueError, match="over 50 bytes"):
        read_json(path, max_bytes=50)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="x.json"):
        read_json(path)


def test_write_errors_name_the_path(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        raise OSError(28, "No space left on device")  # as a full disk's write() raises it: no file name
    assert info.value.errno == 28 and info.value.filename == str(target)
    assert os.listdir(tmp_path) == [] and str(tmp).endswith(".tmp")


# ---------------------------------------------------------------------------------------------------
# atomic_folder (clip-export's output folder)


@pytest.mark.parametrize("portable", [False, True], ids=["renameat2", "without-renameat2"])
def test_atomic_folder_claims_swaps_and_cleans_up(tmp_path, monkeypatch, portable):
    import errno
    import subprocess
    import sys

    import clip_core.files as files

    if portable:
        without_renameat2(monkeypatch)
    out = tmp_path / "out"
    # A folder that appears at OUT meanwhile is not replaced without overwrite.
    with pytest.raises(FileExistsError, match="appeared"), files.atomic_folder(out) as tmp:
        (Path(tmp) / "new").write_text("new")
        out.mkdir()
        (out / "theirs").write_text("theirs")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["theirs"]
    # With overwrite: a failure keeps the old folder as it was; success swaps it; no temporaries left.
    with pytest.raises(OSError) as info, files.atomic_folder(out, overwrite=True) as tmp:
        (Path(tmp) / "new").write_text("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(out)
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["theirs"]
    with files.atomic_folder(out, overwrite=True) as tmp:
        (Path(tmp) / "new").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["new"]
    # Permissions follow the umask; a dead run's temporary is removed; new parents are undone on failure.
    old_umask = os.umask(0o022)
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        host, _, start = files.owner_tag().split(".")
        (tmp_path / f".x.writing-{host}.{int(dead.stdout)}.{start}.abc").mkdir()
        with files.atomic_folder(tmp_path / "x") as tmp:
            assert os.stat(tmp).st_mode & 0o777 == 0o755
        assert sorted(os.listdir(tmp_path)) == ["out", "x"]
    finally:
        os.umask(old_umask)
    # A swap killed between its two renames (no renameat2): the parked old copy is put back first.
    (tmp_path / f".y.old-{host}.{int(dead.stdout)}.{start}.abc").mkdir()
    (tmp_path / f".y.old-{host}.{int(dead.stdout)}.{start}.abc" / "old").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"), files.atomic_folder(tmp_path / "y"):
        pass
    assert os.listdir(tmp_path / "y") == ["old"]
    with pytest.raises(KeyboardInterrupt), files.atomic_folder(tmp_path / "a" / "b" / "c"):
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["out", "x", "y"]
