"""Checkpoint files in every format transformers uses, read lazily and written atomically.

One module per format, each with its reader and its writer: ``safetensors_format``
(model.safetensors), ``torch_format`` (pytorch_model.bin), ``h5_format`` (tf_model.h5) and
``msgpack_format`` (flax_model.msgpack); ``base`` holds what they share (the lazy reader
interface, the dtype table, shards). Every reader and writer streams one tensor at a time.

``open_checkpoint(pretrained)`` -> a lazy ``CheckpointReader`` (a read-only Mapping from canonical
names to numpy arrays in torch layout, with ``info(name)``) for a folder, a weights file or a Hub id.
``save_checkpoint(state, folder, formats)`` writes any Mapping of canonical arrays (a reader too,
so a conversion streams tensor by tensor); both ``clip_core.weights.save_state_dict`` and the
converter write through it.

Every reader refuses a corrupt file with a CheckpointError naming it (and the tensor); a folder
left mid-commit by a save (``clip_core.folder_save``) is refused before anything is read, and
``verify=True`` compares the files read with the folder's checksum manifest first.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence

from clip_core.files import HubOptions, find_file, resolve_file
from clip_core.folder_save import check_folder, verify_files
from clip_core.formats.base import CheckpointReader, parse_size, read_index, superseded_in, weights_family
from clip_core.formats.h5_format import TF_MODEL_NAMES, open_h5, save_h5
from clip_core.formats.msgpack_format import open_msgpack, save_msgpack
from clip_core.formats.safetensors_format import open_safetensors, save_safetensors
from clip_core.formats.torch_format import open_torch_bin, save_torch_bin
from clip_core.names import CheckpointError, infer_model_kind

__all__ = [
    "ALL_FORMATS",
    "CheckpointReader",
    "WEIGHTS_FILES",
    "find_weights_file",
    "format_names",
    "infer_model_kind",
    "open_checkpoint",
    "save_checkpoint",
    "superseded_files",
]

# Preferred first: safetensors needs nothing but numpy and runs no code; then transformers' order.
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "tf_model.h5.index.json",
    "flax_model.msgpack",
    "flax_model.msgpack.index.json",
)

ALL_FORMATS = ("safetensors", "pytorch", "tf", "flax")
FORMAT_ALIASES = {
    "safetensors": "safetensors",
    "pytorch": "pytorch",
    "pt": "pytorch",
    "torch": "pytorch",
    "bin": "pytorch",
    "tf": "tf",
    "h5": "tf",
    "tensorflow": "tf",
    "flax": "flax",
    "msgpack": "flax",
    "jax": "flax",
}


def format_names(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Canonical format names, in order, without repeats: aliases resolved, "all" = the four."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in formats if f.lower() not in FORMAT_ALIASES and f.lower() != "all"]
    if unknown or not formats:
        raise ValueError(
            f"unknown weights format(s) {unknown}; choose from {', '.join(ALL_FORMATS)} or all "
            f"(aliases: {', '.join(sorted(set(FORMAT_ALIASES) - set(ALL_FORMATS)))})"
        )
    names: list[str] = []
    for f in formats:
        names += ALL_FORMATS if f.lower() == "all" else [FORMAT_ALIASES[f.lower()]]
    return tuple(dict.fromkeys(names))


def _opener(path: str):
    """The open function for a weights file (or shard index), by name, else by its first bytes."""
    stem = path[: -len(".index.json")] if path.endswith(".index.json") else path
    ext = os.path.splitext(stem)[1].lower()
    if ext == ".safetensors":
        return open_safetensors
    if ext in (".bin", ".pt", ".pth"):
        return open_torch_bin
    if ext in (".h5", ".hdf5"):
        return open_h5
    if ext == ".msgpack":
        return open_msgpack
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"PK"):
        return open_torch_bin
    if magic.startswith(b"\x89HDF"):
        return open_h5
    raise CheckpointError(f"{path}: unknown weights file type (expected {', '.join(WEIGHTS_FILES)})")


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# The weights files of each format, the file first, then its shard index.
FILES_BY_FORMAT = {
    "safetensors": WEIGHTS_FILES[0:2],
    "pytorch": WEIGHTS_FILES[2:4],
    "tf": WEIGHTS_FILES[4:6],
    "flax": WEIGHTS_FILES[6:8],
}


def _variant_name(filename: str, variant: str | None) -> str:
    """transformers' variant spelling: ``model.fp16.safetensors``, ``model.safetensors.index.fp16.json``."""
    if not variant:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def candidate_files(prefer: str | None = None, use_safetensors: bool | None = None) -> tuple[str, ...]:
    """The weights files to look for, in order.

    ``prefer`` ("safetensors", "pytorch", "tf", "flax": transformers' ``from_tf`` / ``from_flax`` /
    ``from_pt``) moves that format to the front; ``use_safetensors=True`` looks for safetensors
    only, ``False`` for everything else (transformers' meaning).
    """
    order = list(ALL_FORMATS)
    if prefer is not None:
        order.remove(prefer)
        order.insert(0, prefer)
    if use_safetensors is True:
        order = ["safetensors"]
    elif use_safetensors is False:
        order = [f for f in order if f != "safetensors"]
    return tuple(name for fmt in order for name in FILES_BY_FORMAT[fmt])


def find_weights_file(
    pretrained: str,
    cache_dir: str | None = None,
    hub: HubOptions | None = None,
    prefer: str | None = None,
    use_safetensors: bool | None = None,
    variant: str | None = None,
) -> str:
    """The weights file (or shard index) to read for a folder or Hub id, in preference order.

    pytorch_model.bin is skipped when torch is missing and another format is there. ``hub`` holds
    the Hub / subfolder options, ``prefer`` / ``use_safetensors`` / ``variant`` are
    transformers' keywords (see ``candidate_files``).
    """
    skipped_bin = None
    candidates = candidate_files(prefer, use_safetensors)
    for filename in candidates:
        path = find_file(pretrained, _variant_name(filename, variant), cache_dir=cache_dir, hub=hub)
        if path is None:
            continue
        if filename.startswith("pytorch_model") and not _torch_available():
            skipped_bin = skipped_bin or path
            continue
        if filename.endswith(".index.json") and not os.path.isdir(pretrained):
            for shard in sorted(set(read_index(path).values())):  # fetch the shards beside their index
                resolve_file(pretrained, shard, cache_dir=cache_dir, hub=hub)
        return path
    if skipped_bin:
        return skipped_bin  # its reader explains that torch is needed
    where = os.path.join(pretrained, hub.subfolder) if hub and hub.subfolder else pretrained
    looked_for = ", ".join(_variant_name(f, variant) for f in candidates)
    raise FileNotFoundError(f"no weights file in {where} (looked for {looked_for})")


def open_checkpoint(
    pretrained: str | os.PathLike, cache_dir: str | None = None, verify: bool = False, **options
) -> CheckpointReader:
    """Lazy reader for a folder, a weights file (or shard index), or a Hub id (through its cache).

    ``options``: ``hub``, ``prefer``, ``use_safetensors``, ``variant`` (see ``find_weights_file``).
    verify: first compare the weights file (the index and every shard) with the folder's
    checksums.sha256; a missing manifest or any difference is a CheckpointError."""
    pretrained = os.fspath(pretrained)
    path = pretrained if os.path.isfile(pretrained) else find_weights_file(pretrained, cache_dir, **options)
    folder = os.path.dirname(os.path.abspath(path))
    check_folder(folder)
    if verify:
        files = [os.path.basename(path)]
        if path.endswith(".index.json"):
            files += sorted(set(read_index(path).values()))
        verify_files(folder, files)
    return _opener(path)(path)


def superseded_files(folder: str | os.PathLike, written) -> list[str]:
    """Weight files in ``folder`` that a save of the files named ``written`` makes stale: in each
    format written, the shards, index or single file of an earlier save."""
    written = [os.path.basename(os.fspath(w)) for w in written]
    stale: list[str] = []
    for filename in WEIGHTS_FILES[::2]:  # the single-file names
        if any(n == filename or weights_family(filename).match(n) for n in written):
            stale += superseded_in(os.fspath(folder), filename, written)
    return stale


def save_checkpoint(
    state: Mapping,
    folder: str | os.PathLike,
    formats: str | Sequence[str] = ("safetensors",),
    model_kind: str | None = None,
    max_shard_size: int | str | None = None,
) -> list[str]:
    """Write ``state`` (canonical names, torch layout) in each format; returns the paths written.

    formats: "safetensors", "pytorch" (pt/bin/torch), "tf" (h5), "flax" (msgpack) or "all".
    model_kind (default: inferred from the names) picks the Keras model name in tf_model.h5.
    max_shard_size ("5GB", "200MB" or bytes) splits safetensors and pytorch files into shards.
    """
    folder = os.fspath(folder)
    if os.path.isfile(folder):
        raise ValueError(f"expected a folder to save weights into, got the file {folder}")
    names = format_names(formats)
    if model_kind is not None and model_kind not in TF_MODEL_NAMES:
        raise ValueError(f"model_kind must be one of {tuple(TF_MODEL_NAMES)}, got {model_kind!r}")
    max_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    os.makedirs(folder, exist_ok=True)
    written: list[str] = []
    for fmt in names:
        if fmt == "safetensors":
            written += save_safetensors(state, folder, max_bytes)
        elif fmt == "pytorch":
            written += save_torch_bin(state, folder, max_bytes)
        elif fmt == "tf":
            written += save_h5(state, folder, model_kind or infer_model_kind(state.keys()))
        else:
            written += save_msgpack(state, folder)
    return written
