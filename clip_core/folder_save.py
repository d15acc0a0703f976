"""Saves of several files into one folder that land all together or not at all, and the checksum
manifest that ``verify=True`` compares.

``FolderSave(folder)`` stages the new files in a hidden folder inside ``folder``
(``.clip-save-<owner>.<random>``), then commits:

1. the manifest (``checksums.sha256``, sha256sum's format) is computed from the staged files;
2. a journal (``.clip-save.journal``) names the staged files and the old files they supersede
   (shards of an earlier save in the same format);
3. the staged files are renamed into place and the superseded ones removed;
4. the journal is deleted.

A run killed before step 2 leaves the folder as it was (its staging folder is removed by the next
save); one killed during step 3 leaves the journal, and the folder mixes two saves: every loader
refuses it (``check_folder``) until ``recover(folder)`` or the next save finishes the commit. A
failed save (a full disk, any error) removes what it staged and changes nothing; its OSError names
the folder.

Saves into one folder take turns (an flock on the folder while committing); loaders take no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil

from clip_core.files import (
    apply_default_mode,
    atomic_write_text,
    fsync_dir,
    make_dirs,
    make_temporary_dir,
    owner_state,
    owner_tag,
    parse_json,
    parse_temporary,
    remove_created,
    remove_stale_temporaries,
    with_path,
)
from clip_core.names import CheckpointError

MANIFEST = "checksums.sha256"
JOURNAL = ".clip-save.journal"
STAGING_PREFIX = ".clip-save-"


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else _sha(f)


def _sha(f) -> str:  # Python 3.10
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(2**20), b""):
        digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The manifest


def read_manifest(folder: str) -> dict[str, str]:
    """{file name: sha256 hex} from ``folder``'s checksums.sha256; CheckpointError if absent or bad."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read(2**24).splitlines()
    except FileNotFoundError:
        raise CheckpointError(
            f"verify=True, but {folder} has no {MANIFEST} to compare with (our saves and conversions write one)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    entries = {}
    for number, line in enumerate(lines, start=1):
        digest, sep, name = line.partition("  ")
        name = name.removeprefix("*")
        if not sep or len(digest) != 64 or not name or os.path.basename(name) != name:
            raise CheckpointError(f"{path} line {number} is not '<sha256>  <file name>': {line[:100]!r}")
        entries[name] = digest.lower()
    return entries


def manifest_text(entries: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))


def verify_files(folder: str | os.PathLike, names) -> None:
    """Each of ``names`` (files in ``folder``) must be in the manifest with the same sha256."""
    folder = os.fspath(folder)
    entries = read_manifest(folder)
    problems = []
    for name in names:
        path = os.path.join(folder, name)
        if name not in entries:
            problems.append(f"{name} is not listed (it was not written by the save that wrote the manifest)")
        elif not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif sha256_file(path) != entries[name]:
            problems.append(f"{name} has changed since it was saved (sha256 differs)")
    if problems:
        raise CheckpointError(f"{folder} does not match its {MANIFEST}: " + "; ".join(problems))


def write_manifest(folder: str, names) -> str:
    """checksums.sha256 in ``folder`` listing ``names`` (files in it)."""
    entries = {name: sha256_file(os.path.join(folder, name)) for name in names}
    path = os.path.join(folder, MANIFEST)
    atomic_write_text(path, manifest_text(entries))
    return path


# ---------------------------------------------------------------------------------------------
# The journal: loaders refuse a folder left mid-commit


def _read_journal(folder: str) -> dict | None:
    path = os.path.join(folder, JOURNAL)
    try:
        with open(path, "rb") as f:
            journal = parse_json(f.read(2**24), path)
        if not isinstance(journal, dict) or not all(
            k in journal for k in ("owner", "staging", "files", "remove")
        ):
            raise ValueError("not a save journal")
        for name in [journal["staging"], *journal["files"], *journal["remove"]]:
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"bad file name {name!r}")
        return journal
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder} holds an unreadable save journal {JOURNAL}: {e}") from None


def _pending(folder: str, journal: dict) -> list[str]:
    staging = os.path.join(folder, journal["staging"])
    staged = [n for n in journal["files"] if os.path.lexists(os.path.join(staging, n))]
    superseded = [n for n in journal["remove"] if os.path.lexists(os.path.join(folder, n))]
    return staged + superseded


def _journal_owner(folder: str, journal: dict) -> tuple[str, str]:
    """(state, description) of the process that wrote the journal."""
    info = parse_temporary(f"{STAGING_PREFIX}{journal['owner']}.x") or {}
    who = f"process {info.get('pid', '?')} on {info.get('host', '?')}"
    if not info:
        return "dead", who
    return owner_state(info, os.path.join(folder, JOURNAL)), who


def check_folder(folder: str | os.PathLike) -> None:
    """CheckpointError if ``folder`` is mid-commit: a save running now, or one that was interrupted.

    A folder without a journal (every folder not being saved by us right now) passes at the cost
    of one stat."""
    folder = os.fspath(folder)
    if not os.path.lexists(os.path.join(folder, JOURNAL)):
        return
    journal = _read_journal(folder)
    if journal is None:
        return
    pending = _pending(folder, journal)
    if not pending:
        return
    state, who = _journal_owner(folder, journal)
    if state == "alive":
        raise CheckpointError(
            f"{folder} is being saved right now by {who}: {len(pending)} file(s) are still to be moved "
            "into place; load it once the save has finished"
        )
    raise CheckpointError(
        f"{folder} holds an interrupted save ({who} stopped while moving its files into place, so the folder "
        f"mixes two saves; still pending: {', '.join(sorted(pending))}). Finish it with "
        f"clip_core.folder_save.recover({folder!r}) or save again, then load"
    )


def _roll_forward(folder: str, journal: dict) -> None:
    staging = os.path.join(folder, journal["staging"])
    for name in journal["files"]:
        source = os.path.join(staging, name)
        if os.path.lexists(source):
            os.replace(source, os.path.join(folder, name))
    for name in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    fsync_dir(folder)
    os.remove(os.path.join(folder, JOURNAL))
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(folder)


def recover(folder: str | os.PathLike) -> bool:
    """Finish the commit of an interrupted save in ``folder`` (its writer is dead); True if there was one.

    Its files were complete on disk before the journal was written, so the save is completed, not
    undone. Temporaries of dead runs are removed too."""
    folder = os.fspath(folder)
    with _folder_lock(folder):
        return _recover_locked(folder)


def _recover_locked(folder: str) -> bool:
    journal = _read_journal(folder)
    finished = False
    if journal is not None:
        state, who = _journal_owner(folder, journal)
        if state == "alive":
            raise CheckpointError(f"{folder} is being saved right now by {who}")
        _roll_forward(folder, journal)
        finished = True
    remove_stale_temporaries(folder)
    return finished


@contextlib.contextmanager
def _folder_lock(folder: str):
    """flock on the folder itself (no lock file left behind); a no-op where folders cannot be locked."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------------------------
# The save


class FolderSave:
    """Stage files for ``folder`` and commit them together (see the module docstring).

    with FolderSave(folder) as save:
        write files into save.staging
        save.supersede(names)  # old files in ``folder`` to remove at commit
    save.paths  # the committed files' final paths

    manifest: "write" (a new checksums.sha256 listing exactly the staged files), "update" (change
    the entries of the staged and superseded files in an existing manifest, write none otherwise),
    or None.
    """

    def __init__(self, folder: str | os.PathLike, manifest: str | None = "write"):
        self.folder = os.path.abspath(os.fspath(folder))
        self.manifest = manifest
        self.staging = ""
        self.paths: list[str] = []
        self._remove: set[str] = set()
        self._created: list[str] = []  # folders this save made (removed again if it fails)

    def supersede(self, names) -> None:
        self._remove.update(names)

    def __enter__(self) -> FolderSave:
        if os.path.isfile(self.folder):
            raise ValueError(f"expected a folder to save into, got the file {self.folder}")
        try:
            self._created = make_dirs(self.folder)
            with _folder_lock(self.folder):
                _recover_locked(self.folder)  # an interrupted save first, and dead runs' temporaries
            self.staging = make_temporary_dir(self.folder, STAGING_PREFIX)
        except OSError as e:
            remove_created(self._created)
            raise with_path(e, self.folder) from e
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is None:
            try:
                self._commit()
                return False
            except BaseException as e:
                error = e
        shutil.rmtree(self.staging, ignore_errors=True)
        remove_created(self._created)
        if isinstance(error, OSError):
            raise with_path(error, self.folder) from error
        if kind is None:
            raise error
        return False

    def _commit(self) -> None:
        names = sorted(os.listdir(self.staging))
        if any(not os.path.isfile(os.path.join(self.staging, n)) for n in names):
            raise ValueError(f"a save into {self.folder} may stage files only, got {names}")
        names = [n for n in names if n != MANIFEST]
        remove = sorted(
            n for n in self._remove if n not in names and os.path.lexists(os.path.join(self.folder, n))
        )
        with _folder_lock(self.folder):
            entries = self._manifest_entries(names, remove)
            if entries is not None:
                atomic_write_text(os.path.join(self.staging, MANIFEST), manifest_text(entries))
                names.append(MANIFEST)
            for name in names:
                apply_default_mode(os.path.join(self.staging, name), like=os.path.join(self.folder, name))
            journal = {"owner": owner_tag(), "staging": os.path.basename(self.staging), "files": names}
            atomic_write_text(os.path.join(self.folder, JOURNAL), json.dumps({**journal, "remove": remove}))
            _roll_forward(self.folder, {**journal, "remove": remove})
        self.paths = [os.path.join(self.folder, n) for n in names if n != MANIFEST]

    def _manifest_entries(self, names: list[str], remove: list[str]) -> dict[str, str] | None:
        if self.manifest is None:
            return None
        if self.manifest == "update":
            if not os.path.isfile(os.path.join(self.folder, MANIFEST)):
                return None
            try:
                entries = read_manifest(self.folder)
            except CheckpointError:
                entries = {}
            for name in remove:
                entries.pop(name, None)
        else:
            entries = {}
        entries.update({n: sha256_file(os.path.join(self.staging, n)) for n in names})
        return entries
