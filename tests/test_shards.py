"""Webdataset tar shards: brace patterns, samples grouped by key, resume, splits, bad shards, counts and
fingerprints. ``write_shard`` / ``write_shards`` are also the training tests' data."""

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from clip_core.shards import (
    ShardError,
    count_samples,
    expand_braces,
    iter_samples,
    list_shards,
    sample_caption,
    sample_image,
    shards_fingerprint,
    split_shards,
)


def write_shard(path, samples):
    """samples: list of (key, {ext: bytes}) written member by member, as webdataset does."""
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for ext, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_shards(folder, n_shards=8, per_shard=6, captionless=(), size=(16, 20)) -> str:
    """n_shards shards of per_shard (png, txt) samples of random pixels, as img2dataset lays them out;
    the shards in ``captionless`` have images only. Returns the brace pattern naming them all."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
            fields = {"png": buf.getvalue()}
            if s not in captionless:
                fields["txt"] = f"a picture number {s * per_shard + i}".encode()
            samples.append((f"{s:03d}/{s * per_shard + i:06d}", fields))
        write_shard(os.path.join(folder, f"s-{s:03d}.tar"), samples)
    return os.path.join(folder, f"s-{{000..{n_shards - 1:03d}}}.tar")


def test_expand_braces():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(ValueError, match="two integers"):
        expand_braces("x{a..b}")


def test_samples_grouped_by_key_with_resume(tmp_path):
    path = str(tmp_path / "s-000.tar")
    samples = [
        ("00/a", {"jpg": b"img-a", "txt": b" a cat \n"}),
        ("00/b", {"png": b"img-b", "json": json.dumps({"caption": "a dog"}).encode()}),
        ("00.v2/c", {"txt": b"only text"}),  # a dot in the folder part belongs to the key
        ("00/e", {"seg.png": b"mask"}),
    ]
    write_shard(path, samples)
    got = list(iter_samples(path))
    assert [s.key for s in got] == ["00/a", "00/b", "00.v2/c", "00/e"]
    assert [s.index for s in got] == [0, 1, 2, 3]
    assert sample_image(got[0]) == ("jpg", b"img-a") and sample_caption(got[0]) == "a cat"
    assert sample_image(got[1]) == ("png", b"img-b") and sample_caption(got[1]) == "a dog"
    assert sample_image(got[2]) is None and sample_caption(got[2]) == "only text"
    assert got[3].fields == {"seg.png": b"mask"}  # the extension is all after the first dot
    resumed = list(iter_samples(path, start=2))
    assert [s.key for s in resumed] == ["00.v2/c", "00/e"] and resumed[0].index == 2


def test_list_and_split(tmp_path):
    for i in range(5):
        write_shard(str(tmp_path / f"s-{i:03d}.tar"), [(f"k{i}", {"txt": b"x"})])
    shards = list_shards(str(tmp_path / "s-{000..004}.tar"))
    assert shards == sorted(str(tmp_path / f"s-{i:03d}.tar") for i in range(5))
    assert list_shards(str(tmp_path / "*.tar")) == shards
    parts = [split_shards(shards, i, 2) for i in range(2)]
    assert parts[0] == shards[0::2] and parts[1] == shards[1::2]
    with pytest.raises(ShardError, match="s-005.tar"):
        list_shards(str(tmp_path / "s-{000..009}.tar"))


def test_corrupt_shard_is_named(tmp_path):
    path = tmp_path / "bad.tar"
    write_shard(str(path), [("a", {"txt": b"x" * 5000})])
    path.write_bytes(path.read_bytes()[:700])  # truncated inside the first member
    with pytest.raises(ShardError, match="bad.tar"):
        list(iter_samples(str(path)))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ShardError, match="junk.tar"):
        list(iter_samples(str(tmp_path / "junk.tar")))


def test_count_samples_reads_headers_only_and_fingerprint_follows_names_and_sizes(tmp_path):
    pattern = write_shards(str(tmp_path / "a"), n_shards=3, per_shard=5)
    shards = list_shards(pattern)
    assert [count_samples(p) for p in shards] == [5, 5, 5]
    assert count_samples(shards[0]) == len(list(iter_samples(shards[0])))
    # The same files mounted elsewhere: the same fingerprint; one file fewer or changed: another.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = list_shards(str(tmp_path / "b" / "*.tar"))
    assert shards_fingerprint(moved) == shards_fingerprint(shards)
    assert shards_fingerprint(moved[:2]) != shards_fingerprint(shards)
    with open(moved[1], "ab") as f:
        f.write(b"\0" * 512)
    assert shards_fingerprint(moved) != shards_fingerprint(shards)
    path = tmp_path / "cut.tar"
    path.write_bytes(open(shards[0], "rb").read()[:2000])
    with pytest.raises(ShardError, match="cut.tar"):
        count_samples(str(path))
