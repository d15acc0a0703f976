"""Writes under faults: SIGKILL at every step of a save or a conversion (real child processes), a full
disk (a tmpfs of a few MiB, where root may mount one), races for one destination, stale temporaries of
dead runs, permissions under the umask, and the checksum manifest (verify=True / --verify).

What must hold: a folder is the old one or the new one or refused with a clear message, never a mix;
what a dead run leaves is removed by the next run; every write error is an OSError naming the path;
no write aborts or crashes the process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from clip_core.conversion import convert
from clip_core.formats import open_checkpoint
from clip_core.names import CheckpointError
from clip_core.pretrained import load_pretrained, save_pretrained
from clip_core.weights import load_state_dict, save_state_dict
from tests.fault_child import model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
FORMATS = ("safetensors", "pytorch", "tf", "flax")
NO_TORCH_FORMATS = ("safetensors", "tf", "flax")  # pytorch_model.bin is read back only with torch


def child(args: dict, timeout: float = 120) -> tuple[int, dict | None]:
    """Run tests/fault_child.py; (return code, its JSON report or None when it was killed)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.fault_child", json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(
            f"child ended with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.returncode, report


def saved_source(folder, seed: int = 1, formats=("safetensors",)) -> str:
    """A source folder for conversions, with small stand-ins for the tokenizer and preprocessor files
    (a conversion copies them as they are; writing the real ones takes a second per run)."""
    save_pretrained(folder, *model(seed), formats=formats)
    for name, text in (
        ("vocab.json", '{"a": 0}'),
        ("merges.txt", "#version: 0.2\n"),
        ("preprocessor_config.json", "{}"),
    ):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return str(folder)


def kill_points(total: int, most: int = 9) -> list[int]:
    """Up to ``most`` kill points spread over 1..total, always with the last three (the commit)."""
    points = set(np.linspace(1, total, num=min(total, most - 3), dtype=int).tolist())
    points |= {max(1, total - 2), max(1, total - 1), total}
    return sorted(points)


def hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def leftovers(destination) -> list[str]:
    parent, base = os.path.split(os.path.abspath(destination))
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{base}."))


def same_state(a, b) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def which_model(folder, scale: int = 1) -> str:
    """ "A" or "B" when every file of the folder is of one save (seed 1 or 2); else raise."""
    config, state = load_pretrained(folder, "clip")
    seed = int(round(config.logit_scale_init_value - 1))
    _, want = model(seed, scale)
    assert same_state(state, want), f"{folder}: config of seed {seed}, weights of another save"
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path) and name != "pytorch_model.bin":
            assert same_state(load_state_dict(path), want), f"{path} is not of seed {seed}"
    return {1: "A", 2: "B"}[seed]


# ---------------------------------------------------------------------------------------------------
# SIGKILL at every step


def outcome(folder, scale: int = 1) -> str:
    """which_model, or "refused" when the loader refuses the folder and says why."""
    try:
        return which_model(folder, scale)
    except CheckpointError as e:
        assert "interrupted" in str(e), str(e)
        return "refused"


def test_save_pretrained_killed_at_any_step_leaves_the_old_or_the_new_set(tmp_path):
    folder = str(tmp_path / "model")
    _, report = child(
        {"op": "save", "folder": str(tmp_path / "probe"), "seed": 2, "formats": list(NO_TORCH_FORMATS)}
    )
    seen = []
    for k in kill_points(report["events"]):
        shutil.rmtree(folder, ignore_errors=True)
        save_pretrained(folder, *model(1), formats=NO_TORCH_FORMATS)
        code, _ = child(
            {"op": "save", "folder": folder, "seed": 2, "formats": list(NO_TORCH_FORMATS), "kill_at": k}
        )
        assert code == -signal.SIGKILL
        seen.append(outcome(folder))  # refused: it must say why, and a new save must mend it
        save_pretrained(folder, *model(2), formats=NO_TORCH_FORMATS)
        assert which_model(folder) == "B"
        assert hidden(folder) == [], f"kill at step {k} left {hidden(folder)} after the next save"
    assert "A" in seen and "B" in seen, seen


def test_conversion_killed_at_any_step_leaves_no_half_folder_and_the_next_run_cleans_up(tmp_path):
    source = saved_source(tmp_path / "source")
    dst = str(tmp_path / "dst")
    _, report = child({"op": "convert", "source": source, "destination": dst, "formats": ["all"]})
    assert report["ok"], report
    for k in kill_points(report["events"]):
        shutil.rmtree(dst, ignore_errors=True)
        code, _ = child(
            {"op": "convert", "source": source, "destination": dst, "formats": ["all"], "kill_at": k}
        )
        assert code == -signal.SIGKILL
        if os.path.exists(dst):  # complete, or not there at all
            assert which_model(dst) == "A"
            assert {"config.json", "vocab.json", "preprocessor_config.json", *WEIGHT_FILES} <= set(
                os.listdir(dst)
            )
        convert(source, dst, formats=("flax",), overwrite=True, progress=False)
        assert leftovers(dst) == [], f"kill at step {k}: the next conversion left {leftovers(dst)}"


@pytest.mark.parametrize("portable", [False, True], ids=["renameat2", "without-renameat2"])
def test_overwrite_killed_at_any_step_keeps_a_complete_destination(tmp_path, portable):
    old, new = saved_source(tmp_path / "old", seed=1), saved_source(tmp_path / "new", seed=2)
    dst = str(tmp_path / "dst")
    args = {"op": "convert", "source": new, "destination": dst, "formats": ["safetensors", "flax"]}
    args.update(overwrite=True, no_renameat2=portable)
    convert(old, dst, formats=("safetensors",), progress=False)
    _, report = child(args)
    seen = set()
    for k in kill_points(report["events"], most=8):
        shutil.rmtree(dst, ignore_errors=True)
        for n in leftovers(dst):
            shutil.rmtree(os.path.join(tmp_path, n))
        convert(old, dst, formats=("safetensors",), progress=False)
        code, _ = child({**args, "kill_at": k})
        assert code == -signal.SIGKILL
        # A kill between the renames of the portable swap leaves DST missing (or the empty folder that
        # claims it) for a moment; the next run puts the old copy back before anything else.
        if not os.path.exists(dst) or not os.listdir(dst):
            assert portable, f"kill at step {k}: DST vanished although renameat2 swaps in one step"
            with pytest.raises(FileExistsError):
                convert(new, dst, formats=("safetensors",), progress=False)
        seen.add(which_model(dst))
        convert(new, dst, formats=("safetensors", "flax"), overwrite=True, progress=False)
        assert which_model(dst) == "B" and leftovers(dst) == []
    assert seen == {"A", "B"}, seen


def test_killed_mid_write_by_time(tmp_path):
    """Kills at arbitrary moments (not only between steps): inside a large tensor's write."""
    folder = str(tmp_path / "big")
    args = {"op": "save", "folder": folder, "seed": 1, "formats": list(NO_TORCH_FORMATS), "scale": 16}
    save_pretrained(folder, *model(1, 16), formats=NO_TORCH_FORMATS)
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.4, 1.0, size=3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fault_child", json.dumps({**args, "seed": 2})],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert outcome(folder, scale=16) in ("A", "B", "refused")
        save_pretrained(folder, *model(1, 16), formats=NO_TORCH_FORMATS)
        assert hidden(folder) == []


# ---------------------------------------------------------------------------------------------------
# Races for one destination, stale temporaries


def test_a_destination_that_appears_during_the_conversion_is_not_replaced(tmp_path, monkeypatch):
    import clip_core.conversion as conversion

    source = tmp_path / "source"
    config, state = model(1)
    save_pretrained(source, config, state)
    dst = tmp_path / "dst"
    real = conversion._write_extras

    def someone_else_creates_dst(*args, **kwargs):
        dst.mkdir()
        (dst / "theirs.txt").write_text("mine")
        return real(*args, **kwargs)

    monkeypatch.setattr(conversion, "_write_extras", someone_else_creates_dst)
    with pytest.raises(FileExistsError, match="dst"):
        convert(source, dst, progress=False)
    assert os.listdir(dst) == ["theirs.txt"] and (dst / "theirs.txt").read_text() == "mine"
    assert leftovers(dst) == []


def test_an_empty_destination_that_appears_is_not_replaced_either(tmp_path, monkeypatch):
    import clip_core.conversion as conversion

    source = tmp_path / "source"
    save_pretrained(source, *model(1))
    dst = tmp_path / "dst"
    real = conversion._write_extras
    monkeypatch.setattr(conversion, "_write_extras", lambda *a, **k: (dst.mkdir(), real(*a, **k)))
    with pytest.raises(FileExistsError):
        convert(source, dst, progress=False)
    assert os.listdir(dst) == [] and leftovers(dst) == []


def test_two_conversions_to_one_destination_one_wins(tmp_path):
    source = saved_source(tmp_path / "source")
    dst = str(tmp_path / "dst")
    args = json.dumps({"op": "convert", "source": source, "destination": dst, "formats": ["all"]})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fault_child", args], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    reports = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r["ok"] for r in reports) == [False, True], reports
    loser = next(r for r in reports if not r["ok"])
    assert loser["type"] == "FileExistsError" and dst in loser["message"]
    assert which_model(dst) == "A" and leftovers(dst) == []


def test_temporaries_of_dead_runs_are_removed_and_live_ones_reported(tmp_path):
    source = saved_source(tmp_path / "source")
    dst = tmp_path / "dst"
    # A conversion killed early leaves its temporary folder; its process is dead.
    code, _ = child(
        {"op": "convert", "source": str(source), "destination": str(dst), "formats": ["flax"], "kill_at": 3}
    )
    assert code == -signal.SIGKILL and len(leftovers(dst)) == 1
    # Names as the previous release made them (no owner): removed once old, reported while recent.
    old_style = tmp_path / ".dst.converting-abcd1234"
    old_style.mkdir()
    (old_style / "model.safetensors").write_bytes(b"x" * 100)
    os.utime(old_style, (0, 0))
    recent = tmp_path / ".dst.converting-wxyz9876"
    recent.mkdir()
    summary = convert(source, dst, progress=False)
    assert leftovers(dst) == [recent.name]
    assert any(recent.name in note for note in summary.notes), summary.notes
    # Killed saves leave temporary files in the folder; the next save into it removes them.
    folder = tmp_path / "saved"
    save_pretrained(folder, *model(1))
    code, _ = child(
        {"op": "save", "folder": str(folder), "seed": 2, "formats": ["safetensors"], "kill_at": 2}
    )
    assert code == -signal.SIGKILL and hidden(folder)
    save_pretrained(folder, *model(2))
    assert hidden(folder) == []


def test_a_failed_multi_format_save_changes_nothing(tmp_path, monkeypatch):
    import clip_core.formats as formats_module

    folder = tmp_path / "model"
    save_pretrained(folder, *model(1), formats=NO_TORCH_FORMATS)
    before = {n: (folder / n).read_bytes() for n in os.listdir(folder)}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats_module, "save_msgpack", disk_full)  # after safetensors and tf
    with pytest.raises(OSError) as info:
        save_pretrained(folder, *model(2), formats=NO_TORCH_FORMATS)
    assert info.value.errno == errno.ENOSPC and str(folder) in str(info.value)
    assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == before
    assert which_model(folder) == "A"


def test_a_failed_save_into_new_folders_leaves_no_folder(tmp_path, monkeypatch):
    import clip_core.formats as formats_module

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats_module, "save_msgpack", disk_full)
    with pytest.raises(OSError):
        save_pretrained(tmp_path / "a" / "b" / "model", *model(1), formats=NO_TORCH_FORMATS)
    source = saved_source(tmp_path / "source")
    with pytest.raises(OSError):
        convert(source, tmp_path / "c" / "d" / "dst", formats=("all",), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["source"]


# ---------------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield str(mount)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_every_format_gives_an_oserror_with_the_path_and_changes_nothing(small_disk, tmp_path):
    source = os.path.join(small_disk, "source")
    config, state = model(1)
    save_pretrained(source, config, state)
    folder = os.path.join(small_disk, "model")
    save_pretrained(folder, config, state, formats=FORMATS)
    size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    cases = []
    for budget in np.linspace(0, size * 1.2, 6).astype(int).tolist():
        for formats in ([f] for f in FORMATS):
            cases.append({"op": "save", "folder": folder, "seed": 2, "formats": formats, "budget": budget})
        cases.append({"op": "save", "folder": folder, "seed": 2, "formats": list(FORMATS), "budget": budget})
    dst = os.path.join(small_disk, "dst")
    for budget in np.linspace(0, 5 * 2**20, 5).astype(int).tolist():  # tokenizer files are ~3.5 MB
        cases.append(
            {"op": "convert", "source": source, "destination": dst, "formats": ["all"], "budget": budget}
        )
        cases.append(
            {"op": "convert", "source": source, "destination": dst, "formats": ["pt"], "budget": budget}
        )
    code, report = child({"op": "full_disk", "mount": small_disk, "cases": cases}, timeout=300)
    assert code == 0 and report is not None, "the child process died on a full disk"
    failures = [r for r in report["results"] if not r["ok"]]
    assert failures, "no case ran out of space: the disk is too large for the test"
    for r in failures:
        assert "OSError" in r["mro"] and r["errno"] == errno.ENOSPC, r
        where = r["case"].get("folder") or r["case"]["destination"]
        assert os.path.dirname(where) in (r["filename"] or "") + r["message"], r
        assert r["changed"] == [], f"a failed save changed or left {r['changed']}"
    for r in report["results"]:
        if r["ok"] and r["case"]["op"] == "save":
            assert r["changed"] == [], r
    assert which_model(folder) in ("A", "B")


# ---------------------------------------------------------------------------------------------------
# Permissions follow the umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_files_and_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = tmp_path / "model"
        save_pretrained(folder, *model(1), formats=NO_TORCH_FORMATS)
        dst = tmp_path / "dst"
        convert(folder, dst, formats=("flax",), progress=False)
        save_state_dict(model(1)[1], tmp_path / "weights", formats="safetensors", max_shard_size=4000)
    finally:
        os.umask(old)
    for root in (folder, dst, tmp_path / "weights"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o777 & ~umask, root
        for name in os.listdir(root):
            assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o666 & ~umask, root / name


def test_replacing_a_file_keeps_its_mode(tmp_path):
    folder = tmp_path / "model"
    save_pretrained(folder, *model(1))
    os.chmod(folder / "model.safetensors", 0o640)
    save_pretrained(folder, *model(2))
    assert stat.S_IMODE(os.stat(folder / "model.safetensors").st_mode) == 0o640


# ---------------------------------------------------------------------------------------------------
# The checksum manifest


def test_manifest_lists_the_saved_files_and_verify_catches_a_changed_byte(tmp_path):
    folder = tmp_path / "model"
    save_pretrained(folder, *model(1), formats=NO_TORCH_FORMATS)
    lines = (folder / "checksums.sha256").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    assert set(listed) == {"config.json", "model.safetensors", "tf_model.h5", "flax_model.msgpack"}
    for name, digest in listed.items():  # sha256sum's format
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert same_state(load_state_dict(folder, verify=True), model(1)[1])
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0x10  # inside the last tensor: no reader can see it, the manifest can
    (folder / "model.safetensors").write_bytes(bytes(data))
    load_state_dict(folder)  # loads (changed values) without verify
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_state_dict(folder, verify=True)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained(folder, "clip", verify=True)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        convert(folder, tmp_path / "dst", progress=False, verify=True)
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path / "dst") == []
    from clip_core.cli import convert_main

    assert convert_main([str(folder), str(tmp_path / "dst"), "--verify", "--no-progress"]) == 1


def test_from_pretrained_verify(tmp_path):
    pytest.importorskip("torch")
    from clip_torch import CLIPModel

    folder = tmp_path / "model"
    save_pretrained(folder, *model(1))
    CLIPModel.from_pretrained(folder, verify=True)
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("16", "16 "))
    with pytest.raises(CheckpointError, match="config.json"):
        CLIPModel.from_pretrained(folder, verify=True)


def test_verify_without_a_manifest_is_an_error_and_conversions_write_one(tmp_path):
    folder = tmp_path / "model"
    save_pretrained(folder, *model(1))
    os.remove(folder / "checksums.sha256")
    with pytest.raises(CheckpointError, match="checksums.sha256"):
        load_state_dict(folder, verify=True)
    dst = tmp_path / "dst"
    convert(folder, dst, formats=("all",), progress=False)
    listed = [line.split("  ", 1)[1] for line in (dst / "checksums.sha256").read_text().splitlines()]
    assert sorted(listed) == sorted(n for n in os.listdir(dst) if n != "checksums.sha256")
    config, state = load_pretrained(dst, "clip", verify=True)
    assert same_state(state, model(1)[1])
    with open_checkpoint(dst / "tf_model.h5", verify=True) as reader:
        assert len(reader) == len(state)
