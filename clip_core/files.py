"""Locating checkpoint files and writing them atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace


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


@dataclass(frozen=True)
class HubOptions:
    """Where a checkpoint's files come from: transformers' ``from_pretrained`` keywords about files.

    ``subfolder`` applies to local folders too (a Stable Diffusion repo's ``text_encoder/``); the
    others only to Hub ids: ``revision`` (branch, tag or commit), ``cache_dir``, ``local_files_only``
    (or HF_HUB_OFFLINE=1: the cache only), ``token``, ``force_download``, ``proxies``.
    """

    cache_dir: str | None = None
    revision: str | None = None
    subfolder: str = ""
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False
    proxies: dict | None = None

    # Keywords transformers still accepts but that no longer do anything (huggingface_hub ignores them).
    OBSOLETE = (
        "resume_download",
        "mirror",
        "_commit_hash",
        "_from_auto",
        "_from_pipeline",
        "local_dir_use_symlinks",
    )

    @classmethod
    def pop_from(cls, kwargs: dict) -> HubOptions:
        """The options found in ``kwargs`` (removed from it), with transformers' deprecated spellings."""
        for name in cls.OBSOLETE:
            kwargs.pop(name, None)
        token = kwargs.pop("token", None)
        legacy_token = kwargs.pop("use_auth_token", None)
        if token is not None and legacy_token is not None:
            raise ValueError("give token or use_auth_token (deprecated), not both")
        cache_dir = kwargs.pop("cache_dir", None)
        return cls(
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            revision=kwargs.pop("revision", None),
            subfolder=kwargs.pop("subfolder", None) or "",
            local_files_only=bool(kwargs.pop("local_files_only", False)),
            token=token if token is not None else legacy_token,
            force_download=bool(kwargs.pop("force_download", False)),
            proxies=kwargs.pop("proxies", None),
        )

    @property
    def offline(self) -> bool:
        return self.local_files_only or hub_offline()

    def download_kwargs(self) -> dict:
        return dict(
            subfolder=self.subfolder or None,
            revision=self.revision,
            cache_dir=hub_cache_dir(self.cache_dir),
            local_files_only=self.offline,
            token=self.token,
            force_download=self.force_download,
            proxies=self.proxies,
        )


def _options(cache_dir, hub: HubOptions | None) -> HubOptions:
    hub = hub or HubOptions()
    if cache_dir is not None and hub.cache_dir is None:
        hub = replace(hub, cache_dir=os.fspath(cache_dir))
    return hub


def _local(pretrained: str, hub: HubOptions) -> str:
    """A local folder (with the subfolder applied) or file, else ``pretrained`` unchanged."""
    if hub.subfolder and os.path.isdir(pretrained):
        folder = os.path.join(pretrained, hub.subfolder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"no subfolder {hub.subfolder!r} in {pretrained}")
        return folder
    return pretrained


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


def resolve_folder(
    pretrained: str | os.PathLike, cache_dir: str | os.PathLike | None = None, hub: HubOptions | None = None
) -> str:
    """A local folder for ``pretrained``: itself (its ``subfolder``), the folder of a file, or a Hub snapshot.

    For a Hub id, the whole snapshot is fetched (from the cache only when offline); prefer
    ``resolve_file`` / ``find_file``, which fetch single files.
    """
    hub = _options(cache_dir, hub)
    pretrained = _local(os.fspath(pretrained), hub)
    if os.path.isdir(pretrained):
        return pretrained
    if os.path.isfile(pretrained):
        return os.path.dirname(os.path.abspath(pretrained))
    _check_hub_id(pretrained)
    api = _huggingface_hub(pretrained)
    options = hub.download_kwargs()
    subfolder = options.pop("subfolder")
    try:
        folder = api.snapshot_download(
            pretrained,
            allow_patterns=f"{subfolder}/*" if subfolder else None,
            **{k: v for k, v in options.items()},
        )
    except Exception as e:  # the hub raises many types; all mean "not available here"
        raise FileNotFoundError(f"could not resolve {pretrained!r} on the Hub or in its cache: {e}") from None
    return os.path.join(folder, subfolder) if subfolder else folder


def find_file(
    pretrained: str | os.PathLike,
    filename: str,
    cache_dir: str | os.PathLike | None = None,
    hub: HubOptions | None = None,
) -> str | None:
    """The path of ``filename`` in a local folder or a Hub repo (fetched or from the cache), or None.

    ``hub`` carries transformers' file keywords (subfolder, revision, local_files_only, ...).
    Raises FileNotFoundError when ``pretrained`` itself cannot be found (no such folder, no such
    repo); returns None when only the file is absent.
    """
    hub = _options(cache_dir, hub)
    pretrained = _local(os.fspath(pretrained), hub)
    if os.path.isdir(pretrained):
        path = os.path.join(pretrained, filename)
        return path if os.path.isfile(path) else None
    if os.path.isfile(pretrained):
        return pretrained if os.path.basename(pretrained) == filename else None
    _check_hub_id(pretrained)
    api = _huggingface_hub(pretrained)
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return api.hf_hub_download(pretrained, filename, **hub.download_kwargs())
    except (EntryNotFoundError, LocalEntryNotFoundError):
        if not hub.offline or _cached_snapshot_exists(pretrained, hub):
            return None
        raise FileNotFoundError(
            f"{pretrained!r} is not in the Hub cache ({hub_cache_dir(hub.cache_dir) or 'default'}) "
            "and local_files_only / HF_HUB_OFFLINE is set"
        ) from None
    except Exception as e:
        raise FileNotFoundError(f"could not resolve {pretrained!r} on the Hub or in its cache: {e}") from None


def _cached_snapshot_exists(repo_id: str, hub: HubOptions) -> bool:
    from huggingface_hub import constants

    root = hub_cache_dir(hub.cache_dir) or constants.HF_HUB_CACHE
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    if hub.revision and not os.path.isdir(os.path.join(repo, "snapshots", hub.revision)):
        return os.path.isfile(os.path.join(repo, "refs", hub.revision))
    return os.path.isdir(os.path.join(repo, "snapshots"))


def resolve_file(
    pretrained: str | os.PathLike,
    filename: str,
    cache_dir: str | os.PathLike | None = None,
    hub: HubOptions | None = None,
) -> str:
    """The path of ``filename`` for ``pretrained`` (a folder, that very file, or a Hub id)."""
    pretrained = os.fspath(pretrained)
    if os.path.isfile(pretrained):
        return pretrained
    path = find_file(pretrained, filename, cache_dir=cache_dir, hub=hub)
    if path is None:
        where = os.path.join(pretrained, hub.subfolder) if hub and hub.subfolder else pretrained
        raise FileNotFoundError(f"no {filename} in {where}")
    return path
