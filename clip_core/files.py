"""Locating checkpoint files and writing them atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A failed save therefore never leaves a truncated file where a good checkpoint used to be.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))


def resolve_folder(pretrained: str | os.PathLike) -> str:
    """A local folder for ``pretrained``: itself, the folder of a file, or a Hub snapshot from the local cache."""
    pretrained = os.fspath(pretrained)
    if os.path.isdir(pretrained):
        return pretrained
    if os.path.isfile(pretrained):
        return os.path.dirname(os.path.abspath(pretrained))
    if not _looks_like_hub_id(pretrained):
        raise FileNotFoundError(f"{pretrained} is neither a local folder, a file, nor a Hub model id")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{pretrained} is not a local path, and huggingface_hub is not installed to resolve it as a Hub id"
        ) from None
    try:
        # With HF_HUB_OFFLINE=1 (or no network) this answers from the local cache only.
        return snapshot_download(pretrained)
    except Exception as e:  # the hub raises many types; all mean "not available here"
        raise FileNotFoundError(f"could not resolve {pretrained!r} on the Hub or in its cache: {e}") from None


def resolve_file(pretrained: str | os.PathLike, filename: str) -> str:
    """The path of ``filename`` for ``pretrained`` (a folder, that very file, or a Hub id)."""
    pretrained = os.fspath(pretrained)
    if os.path.isfile(pretrained):
        return pretrained
    path = os.path.join(resolve_folder(pretrained), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {filename} in {pretrained}")
    return path
