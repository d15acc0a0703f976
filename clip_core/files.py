"""Locating checkpoint files, and writing files and folders so that a crash leaves nothing half done.

Writes:
- ``atomic_path(path)``: a temporary file beside ``path`` renamed over it only once complete and on
  disk (fsync), with the permissions ``open()`` would give (the umask; an existing file keeps its
  mode). Every write error is an ``OSError`` naming the final path.
- Temporary names carry their owner (``owner_tag``: host, pid, process start time), so that what a
  killed run left behind is recognised: ``remove_stale_temporaries(folder)`` removes the temporaries of
  dead processes on this host (or, for other hosts and nameless ones, of runs older than
  ``STALE_AFTER_SECONDS``) and reports the rest.
- ``rename_noreplace`` (never replaces what is there) and ``exchange`` (swaps two folders in one step)
  use Linux's renameat2; elsewhere ``rename_noreplace`` claims the name with ``mkdir`` first.

``read_json(path)``: JSON with limits on file size and nesting depth (deeply nested files exhaust the
parser's recursion).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

STALE_AFTER_SECONDS = 24 * 3600  # a temporary of another host (or without owner) older than this is dead
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64

# ---------------------------------------------------------------------------------------------
# Permissions

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (from /proc where possible; elsewhere set and restored under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_default_mode(path: str, directory: bool = False, like: str | None = None) -> None:
    """Give ``path`` the mode ``open()`` / ``mkdir()`` would (0666 / 0777 less the umask), or the mode of
    the existing file ``like`` that it is about to replace (temporary files are created 0600)."""
    try:
        mode = stat.S_IMODE(os.stat(like).st_mode) if like else None
    except OSError:
        mode = None
    if mode is None:
        mode = (0o777 if directory else 0o666) & ~current_umask()
    os.chmod(path, mode)


# ---------------------------------------------------------------------------------------------
# Owners of temporary names


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:48] or "host"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot) from /proc, to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_tag() -> str:
    """``host.pid.start``: who writes a temporary name (computed per call: a fork has another pid)."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{_start_ticks(pid) or 0}"


_TAG = r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<start>\d+)"
_RAND = r"[A-Za-z0-9_]+"
TEMP_PATTERNS = (  # (regex, kind): what our writers name their temporaries
    (re.compile(rf"^\.(?P<base>.+)\.{_TAG}\.{_RAND}\.tmp$"), "file"),
    (re.compile(rf"^\.(?P<base>.+)\.(?P<what>converting|writing|old)-{_TAG}\.{_RAND}$"), "conversion"),
    (re.compile(rf"^\.clip-save-{_TAG}\.{_RAND}$"), "save"),
)
LEGACY_PATTERNS = (  # the previous release's names: no owner, judged by age
    re.compile(r"^\.(?P<base>.+)\.[a-z0-9_]{8}\.tmp$"),
    re.compile(r"^\.(?P<base>.+)\.(?P<what>converting|writing|old)-[a-z0-9_]{8}$"),
)


def parse_temporary(name: str) -> dict | None:
    """What a temporary name says: kind, base (the name it stands for), what, host, pid, start; None if
    the name is not one of ours. Legacy names give no host or pid."""
    for pattern, kind in TEMP_PATTERNS:
        match = pattern.match(name)
        if match:
            info = match.groupdict()
            return {
                "kind": kind,
                "base": info.get("base"),
                "what": info.get("what"),
                "host": info["host"],
                "pid": int(info["pid"]),
                "start": int(info["start"]),
            }
    for pattern in LEGACY_PATTERNS:
        match = pattern.match(name)
        if match:
            info = match.groupdict()
            kind = "conversion" if info.get("what") else "file"
            return {"kind": kind, "base": info["base"], "what": info.get("what"), "host": None, "pid": None}
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_state(info: dict, path: str, tag: str | None = None) -> str:
    """ "alive", "dead" or "unknown" for the owner of a temporary (see ``parse_temporary``).

    On this host a pid that is gone, or now belongs to a process started at another time, is dead.
    Other hosts' temporaries and nameless ones are dead once older than STALE_AFTER_SECONDS."""
    if info.get("pid") is not None and info["host"] == _host():
        if not _pid_alive(info["pid"]):
            return "dead"
        started = _start_ticks(info["pid"])
        if info["start"] and started is not None and started != info["start"]:
            return "dead"  # the pid was reused
        return "alive"
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return "dead"
    return "dead" if age > STALE_AFTER_SECONDS else "unknown"


def remove_path(path: str) -> bool:
    """Remove a file, a link or a folder tree, as far as possible (clean-up never raises); True if gone."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)
    return not os.path.lexists(path)


def remove_stale_temporaries(
    folder: str | os.PathLike, base: str | None = None
) -> tuple[list[str], list[str]]:
    """Remove the temporaries in ``folder`` whose writers are dead; (removed, kept) names.

    ``base``: only the temporaries standing for that name (``model.safetensors``, a conversion's
    destination). Kept are those of live writers, or of other hosts / no owner younger than
    STALE_AFTER_SECONDS (perhaps still being written).
    """
    folder = os.fspath(folder)
    removed, kept = [], []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed, kept
    for name in sorted(names):
        info = parse_temporary(name)
        if info is None or (base is not None and info["base"] != base):
            continue
        if info["kind"] == "conversion" and info["what"] == "old":
            continue  # a swap's old copy: clear_dead_runs decides (it may have to be put back)
        path = os.path.join(folder, name)
        state = owner_state(info, path)
        if state == "dead" and remove_path(path):
            removed.append(name)
        elif state != "alive":
            kept.append(name)
    return removed, kept


# ---------------------------------------------------------------------------------------------
# Errors, fsync, atomic files


def with_path(error: OSError, path: str) -> OSError:
    """``error`` naming ``path`` (Python's own write errors name no file; ours name a temporary)."""
    if error.filename is not None and os.path.basename(os.fspath(error.filename)) == os.path.basename(path):
        return error
    if error.errno is None:  # OSError("message"): the path goes into the message
        return error if path in str(error) else type(error)(f"cannot write {path}: {error}")
    try:
        return type(error)(error.errno, error.strerror or str(error), path)
    except TypeError:
        return OSError(error.errno, error.strerror or str(error), path)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str) -> None:
    """Make renames and removals in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A failed save never leaves a truncated file where a good checkpoint used to be, and no temporary
    file either (a killed one is named after its owner, see ``remove_stale_temporaries``). The file
    is on disk before the rename, gets the umask's permissions (or those of the file it replaces),
    and any OSError names ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    created = []
    try:
        created = make_dirs(folder)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.{owner_tag()}.", suffix=".tmp", dir=folder
        )
        os.close(fd)
    except OSError as e:
        remove_created(created)
        raise with_path(e, path) from e
    try:
        yield tmp
        apply_default_mode(tmp, like=path)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.remove(tmp)
        remove_created(created)
        if isinstance(e, OSError):
            raise with_path(e, path) from e
        raise


def make_dirs(folder: str) -> list[str]:
    """os.makedirs(folder, exist_ok=True); the folders it created, outermost first (to undo a failure)."""
    created, probe = [], os.path.abspath(folder)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(folder, exist_ok=True)
    return created[::-1]


def remove_created(created: list[str]) -> None:
    """Remove the folders ``make_dirs`` created, innermost first, as long as they are empty."""
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            return


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

    An existing ``path`` is a FileExistsError unless ``overwrite``; then it is swapped in one step
    (``move_into_place``) only once the new folder is complete, so a failure or a kill leaves the
    old one as it was. A folder that appears at ``path`` meanwhile is never replaced without
    ``overwrite``. The temporary (``.NAME.writing-<owner>.*``) is removed on every error; what dead
    runs left is cleared first (``clear_dead_runs``: an old copy parked by a killed swap is put
    back); folders created for ``path`` are removed again if nothing came of it. Write errors are
    OSErrors naming ``path``.
    """
    path = check_destination(path, overwrite)
    parent, base = os.path.split(path)
    created = []
    try:
        created = make_dirs(parent)
        if clear_dead_runs(parent, base, path):
            check_destination(path, overwrite)  # a killed swap's old copy may have been put back
        tmp = make_temporary_dir(parent, f".{base}.writing-")
    except OSError as e:
        remove_created(created)
        raise with_path(e, path) from e
    try:
        yield tmp
        fsync_dir(tmp)
        move_into_place(tmp, path, overwrite)
    except BaseException as e:
        remove_path(tmp)
        remove_created(created)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise with_path(e, path) from e
        raise


def clear_dead_runs(
    parent: str, base: str, destination: str, complete: Callable[[str], bool] = lambda folder: False
) -> list[str]:
    """Clear what killed runs writing the folder ``destination`` left beside it; notes saying what was done.

    A dead run's ``.DST.converting-*`` / ``.DST.writing-*`` folder is removed, or, if ``complete(it)``
    and DST is the empty folder it had claimed (the portable claim: mkdir, then rename), moved into
    place. A parked old copy (``.DST.old-*``) is put back when DST is missing or that empty claim (a
    swap killed half-way), else removed. Temporaries whose owner may be alive or cannot be judged
    (another host, younger than STALE_AFTER_SECONDS) are left and reported."""
    notes = []
    for name in sorted(os.listdir(parent)):
        info = parse_temporary(name)
        if info is None or info["kind"] != "conversion" or info["base"] != base:
            continue
        path = os.path.join(parent, name)
        state = owner_state(info, path)
        if state == "alive":
            continue
        if state == "unknown":
            notes.append(
                f"left {path}: it may belong to a run still writing {base} on another host "
                f"(it is removed once older than {STALE_AFTER_SECONDS // 3600} h)"
            )
            continue
        claimed = os.path.isdir(destination) and not os.listdir(destination)
        finished = info["what"] == "old" or complete(path)
        if (claimed and finished) or (info["what"] == "old" and not os.path.lexists(destination)):
            if claimed:
                os.rmdir(destination)
            os.rename(path, destination)
            done = "put back" if info["what"] == "old" else "completed"
            notes.append(f"{done} {destination} from {name}: a run was killed while moving it into place")
        elif remove_path(path):
            notes.append(f"removed {name}, left by a run that did not finish")
    return notes


def move_into_place(tmp: str, destination: str, overwrite: bool) -> None:
    """The finished folder ``tmp`` becomes ``destination``: claimed, or with ``overwrite`` swapped.

    Without ``overwrite`` an existing ``destination`` (one that appeared meanwhile) is a
    FileExistsError and is left as it is. With it, the two folders are exchanged in one step where
    the file system can (renameat2), else the old one is parked as ``.NAME.old-*`` and put back if
    the second rename fails."""
    parent, base = os.path.split(destination)
    if overwrite and os.path.isdir(destination):
        if exchange(tmp, destination):  # one step; tmp now holds the old copy
            fsync_dir(parent)
            remove_path(tmp)
            return
        old = make_temporary_dir(parent, f".{base}.old-")
        os.rmdir(old)  # the name only: rename() will not move a folder onto a folder that has files
        os.rename(destination, old)
        try:
            rename_noreplace(tmp, destination)
        except BaseException:
            os.rename(old, destination)
            raise
        fsync_dir(parent)
        remove_path(old)
        return
    try:
        rename_noreplace(tmp, destination)
    except FileExistsError:
        if overwrite and os.path.isdir(destination):
            move_into_place(tmp, destination, overwrite)
            return
        raise FileExistsError(
            errno.EEXIST,
            "appeared while it was being written and was left as it is "
            "(pass overwrite=True / --overwrite to replace it)",
            destination,
        ) from None
    fsync_dir(parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def make_temporary_dir(parent: str, prefix: str) -> str:
    """A new folder ``<prefix><owner>.<random>`` in ``parent``, with the umask's permissions."""
    path = tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}.", dir=parent)
    apply_default_mode(path, directory=True)
    return path


# ---------------------------------------------------------------------------------------------
# Renames that never replace, and swaps in one step

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)


def _renameat2(source: str, target: str, flags: int) -> None:
    """Linux renameat2(2); OSError(EINVAL / ENOSYS) where the system or the file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        raise OSError(errno.ENOSYS, "renameat2 is not available") from None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, target)


def rename_noreplace(source: str, target: str) -> None:
    """Rename ``source`` to ``target``; FileExistsError if ``target`` exists (even an empty folder,
    which a plain rename would silently replace)."""
    try:
        _renameat2(source, target, _RENAME_NOREPLACE)
        return
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "already exists", target) from None
        if e.errno not in _UNSUPPORTED:
            raise
    # Portable: claim the name first (mkdir / link fail if it exists), then move onto the claim.
    if os.path.isdir(source):
        os.mkdir(target)  # FileExistsError if taken
        try:
            os.rename(source, target)  # replaces only our empty claim; fails if someone wrote into it
        except OSError as e:
            with contextlib.suppress(OSError):
                os.rmdir(target)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(errno.EEXIST, "already exists", target) from None
            raise
    else:
        os.link(source, target)
        os.remove(source)


def exchange(first: str, second: str) -> bool:
    """Swap two existing paths in one step; False where the file system cannot (nothing is done)."""
    try:
        _renameat2(first, second, _RENAME_EXCHANGE)
        return True
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise


# ---------------------------------------------------------------------------------------------
# JSON with limits


class JSONLimitError(ValueError):
    """A JSON file too large or nested too deep to read."""


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(text: str | bytes, source: str):
    """json.loads with a depth limit; ValueError (JSONDecodeError or JSONLimitError) naming ``source``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONLimitError(f"{source}: JSON nested deeper than Python can parse") from None
    except json.JSONDecodeError as e:
        raise json.JSONDecodeError(f"{source} is not valid JSON: {e.msg}", e.doc, e.pos) from None
    except UnicodeDecodeError as e:
        raise JSONLimitError(f"{source} is not UTF-8 text: {e}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise JSONLimitError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES):
    """A JSON file, refused (ValueError naming it) when over ``max_bytes`` or nested too deep."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise JSONLimitError(f"{path} is over {max_bytes:,} bytes: too large for a JSON file of this kind")
    return parse_json(data, path)


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
