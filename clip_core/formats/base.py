"""What every checkpoint format shares: the lazy reader interface, the dtype table, shards, sizes.

A reader is a read-only ``Mapping`` from canonical names to numpy arrays in canonical (torch)
layout. Listing names and ``info(name)`` (shape, dtype) read no tensor data; ``reader[name]``
reads one tensor. So a converter can stream a large checkpoint tensor by tensor, and
``dict(reader)`` is the whole state when that is what is wanted.

``DTYPES`` is the one table of dtype names (numpy's, safetensors' codes, torch's storage
classes); ``save_maybe_sharded`` / ``ShardedReader`` handle transformers' shards and their
``*.index.json`` for every format. The format modules build their reader and writer on these.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from clip_core.files import atomic_write_text, read_json
from clip_core.names import CheckpointError, parameter_names

DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' default


class CheckpointReader(Mapping):
    """Lazy, read-only view of one checkpoint: canonical name -> numpy array (canonical layout)."""

    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def canonical_name(stored: str) -> str:
        """The canonical name of a tensor stored as ``stored`` (as a shard index lists it)."""
        return stored

    # Subclasses implement these three.
    def keys(self):  # noqa: D401 - Mapping API
        raise NotImplementedError

    def info(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a tensor, without reading its data."""
        raise NotImplementedError

    def get_tensor(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.keys():
            raise KeyError(f"{name} is not in {self.path}")
        try:
            array = self.get_tensor(name)
            if not isinstance(array, np.ndarray) or not (
                is_floating(array.dtype) or array.dtype.kind in "biu"
            ):
                raise ValueError(
                    f"got {type(array).__name__} {getattr(array, 'dtype', '')}, not an array of numbers"
                )
            return array
        except CheckpointError as e:
            raise e if self.path in str(e) else CheckpointError(f"{self.path}: {e}") from None
        except Exception as e:  # a truncated or corrupt tensor: say which file and which tensor
            raise CheckpointError(
                f"{self.path}: cannot read tensor {name}: {type(e).__name__}: {e}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.keys()))

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {len(self)} tensors)"


def reports_errors(info):
    """For a reader's ``info(name)``: an unknown name is a KeyError; a shape that is not a tuple of
    counts, a dtype that is not a number, or anything a corrupt file makes the format's code raise is
    a CheckpointError naming the file and the tensor."""

    @functools.wraps(info)
    def checked(self, name):
        if name not in self.keys():
            raise KeyError(f"{name} is not in {self.path}")
        try:
            shape, dtype = info(self, name)
            shape, dtype = tuple(shape), np.dtype(dtype)
            if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ValueError(f"shape {shape} is not a tuple of sizes")
            if not (is_floating(dtype) or dtype.kind in "biu"):
                raise ValueError(f"dtype {dtype} is not a number type")
            return tuple(int(d) for d in shape), dtype
        except CheckpointError as e:
            raise e if self.path in str(e) else CheckpointError(f"{self.path}: {e}") from None
        except Exception as e:
            raise CheckpointError(
                f"{self.path}: corrupt entry for tensor {name}: {type(e).__name__}: {e}"
            ) from None

    return checked


def tensor_info(state: Mapping, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of ``state[name]``; a lazy reader answers without reading the tensor."""
    if isinstance(state, CheckpointReader):
        return state.info(name)
    array = np.asarray(state[name])
    return tuple(array.shape), array.dtype


# ---------------------------------------------------------------------------------------------
# dtypes: one table of the names each format gives them


class DtypeNames(NamedTuple):
    safetensors: str  # the code in a safetensors header
    torch_storage: str | None  # torch's typed storage class in a pickle; None: an untyped storage


DTYPES: dict[str, DtypeNames] = {  # by numpy dtype name (bfloat16 and float8 through ml_dtypes)
    "float64": DtypeNames("F64", "DoubleStorage"),
    "float32": DtypeNames("F32", "FloatStorage"),
    "float16": DtypeNames("F16", "HalfStorage"),
    "bfloat16": DtypeNames("BF16", "BFloat16Storage"),
    "float8_e4m3fn": DtypeNames("F8_E4M3", None),
    "float8_e5m2": DtypeNames("F8_E5M2", None),
    "int64": DtypeNames("I64", "LongStorage"),
    "int32": DtypeNames("I32", "IntStorage"),
    "int16": DtypeNames("I16", "ShortStorage"),
    "int8": DtypeNames("I8", "CharStorage"),
    "uint64": DtypeNames("U64", None),
    "uint32": DtypeNames("U32", None),
    "uint16": DtypeNames("U16", None),
    "uint8": DtypeNames("U8", "ByteStorage"),
    "bool": DtypeNames("BOOL", "BoolStorage"),
}
ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")  # floating types numpy itself lacks


def extended_dtype(name: str) -> np.dtype:
    """numpy dtype for a name such as "float32" or "bfloat16" (the latter through ml_dtypes)."""
    try:
        return np.dtype(name)
    except TypeError:
        pass
    try:
        import ml_dtypes
    except ImportError:
        raise CheckpointError(f"tensors of dtype {name} need the ml_dtypes package") from None
    try:
        return np.dtype(getattr(ml_dtypes, name))
    except AttributeError:
        raise CheckpointError(f"unknown tensor dtype {name!r}") from None


def is_bfloat16(dtype: np.dtype) -> bool:
    return np.dtype(dtype).name == "bfloat16"


def is_floating(dtype: np.dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name in ML_DTYPES


def little_endian_bytes(array: np.ndarray) -> memoryview:
    """A tensor's bytes, C order, little-endian, as a view where possible (a large tensor is not
    held twice while it is written)."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">":  # every format here is little-endian; big-endian input is rare
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


# ---------------------------------------------------------------------------------------------
# Shards: transformers' ``<stem>-00001-of-00003<ext>`` files and their ``<file>.index.json``

_SIZE_UNITS = {
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "B": 1,
}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string like "5GB", "500MiB", "100kb" (transformers' units)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive, got {size}")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size must be an int or a size such as '5GB', got {size!r}")
    number, unit = match.groups()
    value = int(float(number) * _SIZE_UNITS[unit or "B"])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def plan_shards(state: Mapping, names: list[str], max_bytes: int) -> list[list[str]]:
    """Split names, in order, into groups of at most ``max_bytes`` (a larger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        n = nbytes(*tensor_info(state, name))
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def shard_filename(filename: str, index: int, count: int) -> str:
    stem, ext = os.path.splitext(filename)
    return f"{stem}-{index + 1:05d}-of-{count:05d}{ext}"


def index_filename(filename: str) -> str:
    return filename + ".index.json"


def write_index(folder: str, filename: str, weight_map: dict[str, str], total_size: int) -> str:
    path = os.path.join(folder, index_filename(filename))
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_text(path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path


def is_plain_file_name(name) -> bool:
    """A file name inside its folder: no separators, not hidden, not '.' or '..'."""
    return (
        isinstance(name, str)
        and bool(name)
        and os.path.basename(name) == name
        and "\\" not in name
        and not name.startswith(".")
    )


def read_index(path: str) -> dict[str, str]:
    """weight_map of a ``*.index.json``: tensor name (as stored) -> shard file name (in the same folder)."""
    try:
        index = read_json(path)
        if not isinstance(index, dict) or "weight_map" not in index:
            raise ValueError("no weight_map object")
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError("weight_map is not a non-empty object")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid shard index: {e}") from None
    for name, shard in weight_map.items():
        if not is_plain_file_name(shard):
            raise CheckpointError(
                f"{path}: the shard of {name} is {shard!r}, not a file name in the index's own folder"
            )
    return weight_map


def weights_family(filename: str):
    """A regex matching ``filename``, its shards and its shard index (``model.safetensors``,
    ``model-00001-of-00003.safetensors``, ``model.safetensors.index.json``)."""
    stem, ext = os.path.splitext(filename)
    return re.compile(
        rf"^(?:{re.escape(filename)}|{re.escape(stem)}-\d{{5}}-of-\d{{5}}{re.escape(ext)}|"
        rf"{re.escape(index_filename(filename))})$"
    )


def superseded_in(folder: str, filename: str, keep) -> list[str]:
    """Files of ``filename``'s family in ``folder`` that a save writing ``keep`` (names) replaces:
    shards or an index of an earlier save, or the single file that would win over new shards."""
    family = weights_family(filename)
    keep = set(keep)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names if family.match(n) and n not in keep and os.path.isfile(os.path.join(folder, n))
    )


def remove_stale_shards(folder: str, filename: str, keep: list[str]) -> None:
    """After a successful save, drop shards (and an index, or the single file) of an earlier save."""
    for name in superseded_in(folder, filename, [os.path.basename(p) for p in keep]):
        os.remove(os.path.join(folder, name))


class ShardedReader(CheckpointReader):
    """Several shard readers behind one index (opening a shard reads its header, not its tensors).

    The index is checked against the shards before anything is read: every tensor it lists must be
    in the shard it names, and every tensor of a shard must be listed there, once."""

    def __init__(self, index_path: str, open_shard, canonical_name=None):
        super().__init__(index_path)
        self._folder = os.path.dirname(os.path.abspath(index_path))
        self._open_shard = open_shard
        self._shards: dict[str, CheckpointReader] = {}
        canonical = canonical_name or getattr(open_shard, "canonical_name", None) or (lambda n: n)
        listed: dict[str, str] = {}  # canonical name -> shard, as the index says
        for stored, file in read_index(index_path).items():
            name = canonical(stored)
            if name in listed:
                raise CheckpointError(f"{index_path} lists {name} twice (as {stored!r} too)")
            listed[name] = file
        self._where: dict[str, str] = {}
        try:
            for file in sorted(set(listed.values())):
                for name in self._shard(file).keys():
                    if name in self._where:
                        raise CheckpointError(
                            f"{index_path}: {name} is in two shards, {self._where[name]} and {file}"
                        )
                    if listed.get(name) != file:
                        where = f"puts it in {listed[name]}" if name in listed else "does not list it"
                        raise CheckpointError(
                            f"{index_path}: shard {file} holds {name}, but the index {where}"
                        )
                    self._where[name] = file
        except BaseException:
            self.close()  # the shards opened so far
            raise
        missing = sorted(set(listed) - set(self._where))
        if missing:
            shown = ", ".join(f"{n} (in {listed[n]})" for n in missing[:5])
            raise CheckpointError(
                f"{index_path} lists {len(missing)} tensor(s) that their shard does not hold: {shown}"
            )

    def _shard(self, file: str) -> CheckpointReader:
        if file not in self._shards:
            path = os.path.join(self._folder, file)
            if not os.path.isfile(path):
                raise CheckpointError(f"{self.path} names the shard {file}, which is missing")
            self._shards[file] = self._open_shard(path)
        return self._shards[file]

    def keys(self):
        return self._where.keys()

    def shard_files(self) -> list[str]:
        return sorted(set(self._where.values()))

    def info(self, name):
        return self._shard(self._where[name]).info(name)

    def get_tensor(self, name):
        return self._shard(self._where[name])[name]

    def close(self):
        for shard in self._shards.values():
            shard.close()


def open_maybe_sharded(path: str, reader_class) -> CheckpointReader:
    """``reader_class(path)``, or a ShardedReader of them for a ``*.index.json``."""
    return ShardedReader(path, reader_class) if path.endswith(".index.json") else reader_class(path)


def save_maybe_sharded(
    state: Mapping, folder: str, filename: str, write_file, max_shard_size=None
) -> list[str]:
    """Write ``filename``, or its shards plus ``<filename>.index.json`` when over ``max_shard_size``.

    ``write_file(state, path, names)`` writes one file atomically. Shards or a single file left by
    an earlier save in the same format are removed afterwards, so no stale file can win on load.
    """
    names = parameter_names(state)
    shards = plan_shards(state, names, max_shard_size) if max_shard_size else [names]
    if len(shards) == 1:
        written = [write_file(state, os.path.join(folder, filename), names)]
    else:
        written, weight_map = [], {}
        for i, shard in enumerate(shards):
            file = shard_filename(filename, i, len(shards))
            written.append(write_file(state, os.path.join(folder, file), shard))
            weight_map.update(dict.fromkeys(shard, file))
        total = sum(nbytes(*tensor_info(state, n)) for n in names)
        written.append(write_index(folder, filename, weight_map, total))
    written = [os.path.abspath(p) for p in written]
    remove_stale_shards(folder, filename, keep=written)  # a single file would also win over new shards
    return written
