"""Locating checkpoint files and writing them atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
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


def check_destination(path: str | os.PathLike, overwrite: bool = False) -> str:
    """``path`` made absolute, if a folder may be written there: a FileExistsError says why not."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"{path} exists and is not a folder")
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield an empty folder beside ``path``; it becomes ``path`` only if the block succeeds.

    An existing ``path`` is a FileExistsError unless ``overwrite``; then it is replaced only after
    the new folder is complete, so a failure leaves the old one as it was and no partial folder.
    """
    path = check_destination(path, overwrite)
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.writing-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the folder from a server's user
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(path, os.path.join(old, base))
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub itself reads it once, at import)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return _truthy(os.environ["HF_HUB_OFFLINE"])
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> str | None:
    """The Hub cache to use: ``cache_dir``, else HF_HUB_CACHE / HF_HOME as set now, else the hub's default."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return os.path.expanduser(os.environ[variable])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _huggingface_hub(pretrained: str):
    try:
        import huggingface_hub
    except ImportError:
        raise FileNotFoundError(
            f"{pretrained} is not a local path, and huggingface_hub is not installed to resolve it as a Hub id"
        ) from None
    return huggingface_hub


def _check_hub_id(pretrained: str) -> None:
    if not _looks_like_hub_id(pretrained):
        raise FileNotFoundError(f"{pretrained} is neither a local folder, a file, nor a Hub model id")


def resolve_folder(pretrained: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """A local folder for ``pretrained``: itself, the folder of a file, or a Hub snapshot.

    For a Hub id, the whole snapshot is fetched (from the cache only when HF_HUB_OFFLINE=1);
    prefer ``resolve_file`` / ``find_file``, which fetch single files.
    """
    pretrained = os.fspath(pretrained)
    if os.path.isdir(pretrained):
        return pretrained
    if os.path.isfile(pretrained):
        return os.path.dirname(os.path.abspath(pretrained))
    _check_hub_id(pretrained)
    hub = _huggingface_hub(pretrained)
    try:
        return hub.snapshot_download(
            pretrained, cache_dir=hub_cache_dir(cache_dir), local_files_only=hub_offline()
        )
    except Exception as e:  # the hub raises many types; all mean "not available here"
        raise FileNotFoundError(f"could not resolve {pretrained!r} on the Hub or in its cache: {e}") from None


def find_file(
    pretrained: str | os.PathLike, filename: str, cache_dir: str | os.PathLike | None = None
) -> str | None:
    """The path of ``filename`` in a local folder or a Hub repo (fetched or from the cache), or None.

    Raises FileNotFoundError when ``pretrained`` itself cannot be found (no such folder, no such
    repo); returns None when only the file is absent.
    """
    pretrained = os.fspath(pretrained)
    if os.path.isdir(pretrained):
        path = os.path.join(pretrained, filename)
        return path if os.path.isfile(path) else None
    if os.path.isfile(pretrained):
        return pretrained if os.path.basename(pretrained) == filename else None
    _check_hub_id(pretrained)
    hub = _huggingface_hub(pretrained)
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hub.hf_hub_download(
            pretrained, filename, cache_dir=hub_cache_dir(cache_dir), local_files_only=hub_offline()
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        if not hub_offline() or _cached_snapshot_exists(pretrained, cache_dir):
            return None
        raise FileNotFoundError(
            f"{pretrained!r} is not in the Hub cache ({hub_cache_dir(cache_dir) or 'default'}) "
            "and HF_HUB_OFFLINE is set"
        ) from None
    except Exception as e:
        raise FileNotFoundError(f"could not resolve {pretrained!r} on the Hub or in its cache: {e}") from None


def _cached_snapshot_exists(repo_id: str, cache_dir: str | os.PathLike | None) -> bool:
    from huggingface_hub import constants

    root = hub_cache_dir(cache_dir) or constants.HF_HUB_CACHE
    return os.path.isdir(os.path.join(root, "models--" + repo_id.replace("/", "--"), "snapshots"))


def resolve_file(
    pretrained: str | os.PathLike, filename: str, cache_dir: str | os.PathLike | None = None
) -> str:
    """The path of ``filename`` for ``pretrained`` (a folder, that very file, or a Hub id)."""
    pretrained = os.fspath(pretrained)
    if os.path.isfile(pretrained):
        return pretrained
    path = find_file(pretrained, filename, cache_dir=cache_dir)
    if path is None:
        raise FileNotFoundError(f"no {filename} in {pretrained}")
    return path
