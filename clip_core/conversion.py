"""Conversion of any CLIP checkpoint we can read into a complete transformers folder.

``convert(src, dst, formats=("all",), dtype=None, overwrite=False)`` is the Python API;
``clip-convert`` (``clip_core.cli.convert_main``) is its command line.

SRC is a transformers folder (model.safetensors, pytorch_model.bin, tf_model.h5 or
flax_model.msgpack, sharded or not), a single weights file (its config from ``config``, from a
config.json beside it, or inferred from the shapes), OpenAI's original CLIP state dict of a ViT
model, or an open_clip state dict of an OpenAI-architecture model (renamed through
``clip_core.openai_checkpoints``). DST becomes a folder with config.json, the weights, the
tokenizer files and preprocessor_config.json.

The conversion streams: ``open_source`` opens the source lazily and checks its names and shapes
against the config (``clip_core.names.fit_problems``) before reading any tensor;
``ConvertingView`` renames, re-lays out and casts each tensor on its way to the writers
(``clip_core.formats.save_checkpoint``), so memory holds about one tensor (plus the source file's
own index), not the model.

Everything is written into a hidden sibling folder (``.DST.converting-<owner>.<random>``), with a
checksum manifest (``checksums.sha256``), and moved into place only once complete:
- without ``overwrite`` DST is claimed by a rename that never replaces anything (renameat2's
  RENAME_NOREPLACE; elsewhere a mkdir claim): a DST that appeared meanwhile is left alone and the
  conversion fails with FileExistsError;
- with ``overwrite`` the new folder and DST are swapped in one step (RENAME_EXCHANGE); where the file
  system cannot, by two renames, the old copy parked as ``.DST.old-<owner>.<random>``;
- a failure (a full disk: an OSError naming DST) removes the hidden folder and leaves DST as it was;
- what killed runs left beside DST is found by its owner's pid, host and age: removed when the run
  is dead (a parked old copy is put back if DST is missing), reported in the summary's notes
  otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from clip_core.config import ConfigError
from clip_core.files import (
    atomic_copy,
    clear_dead_runs,
    fsync_dir,
    make_dirs,
    make_temporary_dir,
    move_into_place,
    remove_created,
    remove_path,
    with_path,
)
from clip_core.folder_save import MANIFEST, read_manifest, verify_files, write_manifest
from clip_core.formats import find_weights_file, format_names, open_checkpoint, save_checkpoint
from clip_core.formats.base import CheckpointReader, extended_dtype, is_floating, nbytes, read_index
from clip_core.names import (
    CANONICAL_ROOTS,
    DTYPE_ALIASES,
    CheckpointError,
    canonical_shapes,
    fit_problems,
    infer_model_kind,
    is_ignored,
    model_kind,
)
from clip_core.openai_checkpoints import (
    OpenAIView,
    infer_config_from_canonical,
    is_openai_state_dict,
)

TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "added_tokens.json",
)
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclasses.dataclass
class ConversionSummary:
    source: str
    destination: str
    source_kind: str  # "transformers", "weights file", "openai"
    model_kind: str
    formats: tuple[str, ...]
    dtype: str | None
    tensors: int
    parameters: int
    bytes: int  # size of the weight files written
    seconds: float
    files: list[str]  # every file in the destination folder, by name
    notes: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"converted {self.source} ({self.source_kind}, {self.model_kind}) -> {self.destination}: "
            f"{self.tensors} tensors, {self.parameters:,} parameters, {self.bytes / 2**20:.1f} MiB of "
            f"{'/'.join(self.formats)} weights{f' in {self.dtype}' if self.dtype else ''}, "
            f"{self.seconds:.1f}s; files: {', '.join(self.files)}"
        )
        return "\n".join([text, *(f"note: {n}" for n in self.notes)])


# ---------------------------------------------------------------------------------------------
# Sources


def _strip_prefix(names) -> str:
    names = list(names)
    return "module." if names and all(n.startswith("module.") for n in names) else ""


def _looks_canonical(names) -> bool:
    return any(n.split(".")[0] in CANONICAL_ROOTS for n in names)


def _shapes(reader: CheckpointReader) -> dict[str, tuple[int, ...]]:
    return {n: tuple(reader.info(n)[0]) for n in reader.keys()}


def _load_config(path: str, kind: str):
    try:
        return model_kind(kind).config_class.from_pretrained(path)
    except (ConfigError, ValueError, OSError) as e:
        raise CheckpointError(f"cannot read the config {path}: {e}") from None


@dataclasses.dataclass
class Source:
    reader: CheckpointReader  # canonical names and layout
    config: object
    kind: str
    source_kind: str
    folder: str | None  # where tokenizer / preprocessor files may be found
    notes: list[str]
    names: list[str]  # the tensors the model takes, in the reader's order (the other tower's left out)


def open_source(
    source: str | os.PathLike, config: str | None = None, hidden_act: str = "quick_gelu"
) -> Source:
    """Open any supported source lazily and find its config; checks names and shapes, reads no tensor."""
    source = os.fspath(source)
    notes: list[str] = []
    if os.path.isdir(source):
        try:
            path = find_weights_file(source)
        except FileNotFoundError as e:
            raise CheckpointError(str(e)) from None
        folder = source
    elif os.path.isfile(source):
        path, folder = source, None
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    raw = open_checkpoint(path)
    try:
        names = list(raw.keys())
        prefix = _strip_prefix(names)
        if is_openai_state_dict(n[len(prefix) :] for n in names):
            reader: CheckpointReader = OpenAIView(raw, prefix)
            source_kind = "openai"
            if config is None:
                cfg = infer_config_from_canonical(_shapes(reader), hidden_act)
                notes.append(
                    f"config inferred from the tensor shapes (hidden_act={hidden_act}, heads = width / 64)"
                )
        elif _looks_canonical(names):
            reader = raw
            source_kind = "transformers" if folder else "weights file"
        else:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise CheckpointError(
                f"{path} does not look like a CLIP checkpoint: none of its {len(names)} tensors has a "
                f"transformers CLIP name or an OpenAI/open_clip one (found: {shown or 'no tensors'})"
            )
        kind = infer_model_kind(reader.keys())
        if config is not None:
            cfg = _load_config(config, kind)
        elif source_kind != "openai":
            beside = folder or os.path.dirname(os.path.abspath(path))
            if os.path.isfile(os.path.join(beside, "config.json")):
                cfg = _load_config(beside, kind)
            elif kind == "clip":
                cfg = infer_config_from_canonical(_shapes(reader), hidden_act)
                notes.append(f"no config.json: config inferred from the shapes (hidden_act={hidden_act})")
            else:
                raise CheckpointError(f"{path}: no config.json beside it; pass --config")
        check_fits(reader, cfg, kind)
    except BaseException:
        raw.close()
        raise
    expected = canonical_shapes(cfg, kind)
    return Source(reader, cfg, kind, source_kind, folder, notes, [n for n in reader.keys() if n in expected])


def check_fits(reader: CheckpointReader, config, kind: str) -> None:
    """Names and shapes of the checkpoint against the model the config describes (no data read)."""
    problems = fit_problems(_shapes(reader), config, kind)
    if problems:
        raise CheckpointError(f"{reader.path} does not fit its config ({kind}): " + " | ".join(problems))


# ---------------------------------------------------------------------------------------------
# The streaming view the writers read from


class ConvertingView(CheckpointReader):
    """Canonical tensors of the source (``names``, default all but ignored buffers), cast to
    ``dtype`` (floating tensors only) as they are read; ``on_read(nbytes)`` after each."""

    def __init__(
        self,
        reader: CheckpointReader,
        dtype: str | None,
        on_read: Callable[[int], None] | None = None,
        names: list[str] | None = None,
    ):
        super().__init__(reader.path)
        self._reader = reader
        self._dtype = extended_dtype(dtype) if dtype else None
        names = [n for n in reader.keys() if not is_ignored(n)] if names is None else names
        self._names = dict.fromkeys(names)
        self.on_read = on_read

    def keys(self):
        return self._names.keys()

    def _target(self, dtype) -> np.dtype:
        dtype = np.dtype(dtype)
        return self._dtype if (self._dtype is not None and is_floating(dtype)) else dtype

    def info(self, name):
        shape, dtype = self._reader.info(name)
        shape = () if name == "logit_scale" else tuple(shape)
        return shape, self._target(dtype)

    def get_tensor(self, name):
        array = self._reader[name]
        if name == "logit_scale":
            array = array.reshape(())
        target = self._target(array.dtype)
        if array.dtype != target:
            array = array.astype(target)
        if self.on_read is not None:
            self.on_read(array.nbytes)
        return array


# ---------------------------------------------------------------------------------------------
# Writing the destination folder


def _write_extras(src: Source, folder: str, notes: list[str]) -> None:
    from_folder = [f for f in TOKENIZER_FILES if src.folder and os.path.isfile(os.path.join(src.folder, f))]
    if from_folder:
        for f in from_folder:
            atomic_copy(os.path.join(src.folder, f), os.path.join(folder, f))
    else:
        from clip_core.tokenization_fast import CLIPTokenizerFast

        CLIPTokenizerFast().save_pretrained(folder)
        vocab = getattr(src.config, "text_config", src.config)
        if getattr(vocab, "vocab_size", 49408) != 49408:
            notes.append(
                f"the bundled OpenAI vocabulary (49408 tokens) was written, but the model has "
                f"{vocab.vocab_size} token embeddings"
            )
    if src.folder and os.path.isfile(os.path.join(src.folder, PREPROCESSOR_FILE)):
        atomic_copy(os.path.join(src.folder, PREPROCESSOR_FILE), os.path.join(folder, PREPROCESSOR_FILE))
    else:
        from clip_core.image_processing import CLIPImageProcessor

        vision = getattr(src.config, "vision_config", src.config)
        size = getattr(vision, "image_size", 224)
        CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ).save_pretrained(folder)


def _write_config(src: Source, folder: str, dtype: str | None) -> None:
    config = src.config
    config.extra.setdefault("architectures", [model_kind(src.kind).architecture])
    if dtype:  # transformers 4.57 writes "dtype"; older configs say "torch_dtype"
        config.extra["dtype"] = dtype
        if "torch_dtype" in config.extra:
            config.extra["torch_dtype"] = dtype
    config.save_pretrained(folder)


def _progress_bar(total: int, progress):
    if progress is False or progress is None:
        return None
    if progress != "always" and not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="converting", file=sys.stderr)


def _has_manifest(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST))  # written last: the folder is complete


def source_files(source: str) -> tuple[str, list[str]]:
    """(folder, names): the files of ``source`` a conversion reads (config, weights or index and shards)."""
    path = find_weights_file(source) if os.path.isdir(source) else source
    folder = os.path.dirname(os.path.abspath(path))
    names = [os.path.basename(path)]
    if path.endswith(".index.json"):
        names += sorted(set(read_index(path).values()))
    if os.path.isfile(os.path.join(folder, "config.json")):
        names.append("config.json")
    return folder, names


def verify_source(source: str) -> None:
    """The files a conversion reads, and every file the manifest lists, against checksums.sha256."""
    folder, names = source_files(source)
    verify_files(folder, sorted(set(names) | set(read_manifest(folder))))


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    formats=("safetensors",),
    dtype: str | None = None,
    overwrite: bool = False,
    progress=True,
    config: str | os.PathLike | None = None,
    hidden_act: str = "quick_gelu",
    verify: bool = False,
) -> ConversionSummary:
    """Convert ``source`` into the transformers folder ``destination``; see the module docstring.

    formats: any of "safetensors", "pt", "tf", "flax" or "all". dtype: None (keep), "fp32",
    "bf16" or "fp16" (floating tensors only). progress: True shows a bar on a terminal,
    "always" everywhere, False never. config: a config.json (or folder) to use instead of the
    source's own or an inferred one. verify: check the source against its checksums.sha256 before
    reading it (CheckpointError if it has none or a file differs), and the written folder after.
    """
    start = time.perf_counter()
    source, destination = os.fspath(source), os.path.abspath(os.fspath(destination))
    fmts = format_names(formats)
    if dtype is not None and dtype not in DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}: choose from fp32, bf16, fp16")
    target_dtype = None if dtype is None else DTYPE_ALIASES[dtype]
    parent, base = os.path.split(destination)
    created = []
    try:
        created = make_dirs(parent)
        notes = clear_dead_runs(parent, base, destination, complete=_has_manifest)
    except OSError as e:
        remove_created(created)
        raise with_path(e, destination) from e
    try:
        return _convert_into(
            source,
            destination,
            fmts,
            target_dtype,
            overwrite,
            progress,
            config,
            hidden_act,
            verify,
            notes,
            start,
        )
    except BaseException:
        remove_created(created)  # folders made for DST's parent, if nothing came of it
        raise


def _convert_into(
    source, destination, fmts, target_dtype, overwrite, progress, config, hidden_act, verify, notes, start
):
    """convert() once DST's parent exists and dead runs' leftovers are cleared."""
    parent, base = os.path.split(destination)
    if os.path.lexists(destination):
        if not os.path.isdir(destination):
            raise FileExistsError(f"{destination} exists and is not a folder")
        if not overwrite:
            raise FileExistsError(f"{destination} exists; pass overwrite=True (--overwrite) to replace it")
    if verify:
        verify_source(source)
    src = open_source(source, None if config is None else os.fspath(config), hidden_act)
    notes += src.notes
    try:
        tmp = make_temporary_dir(parent, f".{base}.converting-")
    except OSError as e:
        src.reader.close()
        raise with_path(e, destination) from e
    try:
        with src.reader:
            view = ConvertingView(src.reader, target_dtype, names=src.names)
            infos = {n: view.info(n) for n in view.keys()}
            parameters = sum(int(np.prod(shape)) for shape, _ in infos.values())
            bar = _progress_bar(sum(nbytes(*info) for info in infos.values()) * len(fmts), progress)
            view.on_read = bar.update if bar is not None else None
            weight_files: list[str] = []
            try:
                for fmt in fmts:  # one at a time, so that the bar says which
                    if bar is not None:
                        bar.set_description(f"writing {fmt}")
                    weight_files += save_checkpoint(view, tmp, fmt, model_kind=src.kind)
            finally:
                if bar is not None:
                    bar.close()
        _write_config(src, tmp, target_dtype)
        _write_extras(src, tmp, notes)
        written = sum(os.path.getsize(p) for p in weight_files)
        names = sorted(os.listdir(tmp))
        write_manifest(tmp, names)
        if verify:
            verify_files(tmp, names)
        fsync_dir(tmp)
        move_into_place(tmp, destination, overwrite)
    except BaseException as e:
        remove_path(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise with_path(e, destination) from e
        raise
    return ConversionSummary(
        source=source,
        destination=destination,
        source_kind=src.source_kind,
        model_kind=src.kind,
        formats=fmts,
        dtype=target_dtype,
        tensors=len(src.names),
        parameters=parameters,
        bytes=written,
        seconds=time.perf_counter() - start,
        files=sorted(os.listdir(destination)),
        notes=notes,
    )
