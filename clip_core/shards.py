"""Webdataset tar shards (as img2dataset writes them): shard lists, samples, splits per host and worker.

A shard is a plain tar file; consecutive members that share a key (the member path up to the first
dot of its file name: ``00000/000000012.jpg`` and ``00000/000000012.txt`` are key
``00000/000000012``) form one sample, a dict from extension (``jpg``, ``txt``, ``json``) to bytes.
Shards are read sequentially (``tarfile`` stream mode), so memory holds one sample, not a shard.

- ``list_shards("data/{00000..00099}.tar")``: brace ranges and lists, globs, or a list of those;
  sorted, every file checked to exist.
- ``split_shards(shards, index, count)``: the shards of one host (or one worker of a host).
- ``iter_samples(path, start=0)``: the samples of one shard, skipping the first ``start`` (a
  resumed reader continues at the sample after the last one it finished).
- ``sample_image`` / ``sample_caption``: the image bytes and caption of a sample, by extension.
- ``count_samples(path)``: the number of samples in a shard from its member headers alone (the
  file is seeked over, no image bytes are read).
- ``shards_fingerprint(shards)``: a digest of the shard names (relative to their common folder)
  and sizes, the same on every host that sees the same files wherever they are mounted.

Used by the embedding pipeline (clip_core.embedding) and by the training input (clip_flax.data).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
IMAGE_SUFFIXES = tuple("." + extension for extension in IMAGE_EXTENSIONS)  # of image files in folders
CAPTION_EXTENSIONS = ("txt", "caption", "text")
_BRACE = re.compile(r"\{([^{}]*)\}")


class ShardError(ValueError):
    """A shard that cannot be read (missing, not a tar, truncated): the file is named."""


@dataclass
class Sample:
    key: str
    shard: str
    index: int  # position of the sample within its shard, from 0
    fields: dict[str, bytes] = field(default_factory=dict)


def expand_braces(pattern: str) -> list[str]:
    """``a{1..3}b`` -> a1b a2b a3b (zero-padded when the bounds are: ``{000..002}``); ``{x,y}`` -> both."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    if ".." in body and "," not in body:
        low, high = body.split("..", 1)
        if not (low.isdigit() and high.isdigit()):
            raise ValueError(f"brace range {{{body}}} in {pattern!r} must be two integers")
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        options = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def list_shards(patterns: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Every shard named by ``patterns`` (brace patterns, globs, files), sorted and checked to exist."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        for name in expand_braces(os.fspath(pattern)):
            matches = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
            if not matches or not all(os.path.isfile(m) for m in matches):
                raise ShardError(f"no shard file {name!r} (from {os.fspath(pattern)!r})")
            found += matches
    if not found:
        raise ShardError(f"no shards in {patterns!r}")
    return sorted(dict.fromkeys(found))


def split_shards(shards: Sequence[str], index: int, count: int) -> list[str]:
    """The shards of part ``index`` of ``count`` (a host, or a worker within a host): every count-th."""
    if not 0 <= index < count:
        raise ValueError(f"part index {index} out of range for {count} parts")
    return list(shards[index::count])


def _split_name(member: str) -> tuple[str, str]:
    folder, name = os.path.split(member)
    stem, dot, extension = name.partition(".")
    return os.path.join(folder, stem) if folder else stem, extension.lower() if dot else ""


def iter_samples(path: str, start: int = 0) -> Iterator[Sample]:
    """The samples of one shard in order, from sample number ``start`` on.

    Members that are not regular files are skipped; a sample's members must be consecutive, as
    webdataset writes them. A truncated or corrupt shard raises ShardError naming it.
    """
    current: Sample | None = None
    index = -1
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, extension = _split_name(member.name)
                if current is None or key != current.key:
                    if current is not None and current.index >= start:
                        yield current
                    index += 1
                    current = Sample(key, path, index)
                if index < start:
                    continue  # skipped sample: its bytes are never read
                data = archive.extractfile(member)
                current.fields[extension] = data.read() if data is not None else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"{path}: not a readable tar shard ({type(e).__name__}: {e})") from None
    if current is not None and current.index >= start:
        yield current


def count_samples(path: str) -> int:
    """The number of samples (distinct consecutive keys) in one shard, from its member headers only."""
    count, last = 0, None
    try:
        with tarfile.open(path, mode="r:*") as archive:  # seekable: member data is skipped, not read
            for member in archive:
                if not member.isfile():
                    continue
                key, _ = _split_name(member.name)
                if key != last:
                    count, last = count + 1, key
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"{path}: not a readable tar shard ({type(e).__name__}: {e})") from None
    return count


def shards_fingerprint(shards: Sequence[str]) -> str:
    """sha256 of every shard's name (relative to the shards' common folder) and size, in order."""
    shards = [os.fspath(s) for s in shards]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(s)) for s in shards]) if shards else ""
    digest = hashlib.sha256()
    for path in shards:
        name = os.path.relpath(os.path.abspath(path), root)
        digest.update(f"{name}\0{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def sample_image(sample: Sample) -> tuple[str, bytes] | None:
    """(extension, bytes) of the sample's image, or None if it has none."""
    for extension in IMAGE_EXTENSIONS:
        if extension in sample.fields:
            return extension, sample.fields[extension]
    return None


def sample_caption(sample: Sample) -> str | None:
    """The sample's caption: a text member, else the ``caption`` (or ``text``) field of its json."""
    for extension in CAPTION_EXTENSIONS:
        if extension in sample.fields:
            return sample.fields[extension].decode("utf-8", errors="replace").strip()
    if "json" in sample.fields:
        try:
            meta = json.loads(sample.fields["json"])
        except ValueError:
            return None
        if isinstance(meta, dict):
            for name in ("caption", "text"):
                if isinstance(meta.get(name), str):
                    return meta[name].strip()
    return None
