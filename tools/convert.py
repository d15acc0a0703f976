"""clip-convert: turn any CLIP checkpoint we can read into a complete transformers folder.

    clip-convert SRC DST [--to safetensors|pt|tf|flax|all] [--dtype fp32|bf16|fp16] [--overwrite]

SRC is a transformers folder (model.safetensors, pytorch_model.bin, tf_model.h5 or
flax_model.msgpack, sharded or not), a single weights file (its config from --config, from a
config.json beside it, or inferred from the shapes), OpenAI's original CLIP state dict of a ViT
model, or an open_clip state dict of an OpenAI-architecture model. DST becomes a folder with
config.json, the weights, the tokenizer files and preprocessor_config.json.

The conversion streams: the source is read one tensor at a time, each tensor is renamed, re-laid
out and cast on its way to the writer, so memory holds about one tensor (plus the source file's
own index), not the model. Everything is written into a hidden sibling folder that replaces DST
only once complete: a failure leaves DST as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

from clip_core import formats as checkpoint_formats
from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, ConfigError
from clip_core.formats import find_weights_file, format_names
from clip_core.formats import open_checkpoint as _open_checkpoint
from clip_core.formats.base import CheckpointReader, extended_dtype, is_floating, nbytes
from clip_core.openai_checkpoints import OpenAIView, infer_config_from_canonical, is_openai_state_dict
from clip_core.weights import CANONICAL_ROOTS, CheckpointError, canonical_shapes, is_ignored

DTYPES = {
    None: None,
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "added_tokens.json",
)
PREPROCESSOR_FILE = "preprocessor_config.json"
CONFIG_CLASSES = {
    "clip": CLIPConfig,
    "text": CLIPTextConfig,
    "text_with_projection": CLIPTextConfig,
    "vision": CLIPVisionConfig,
    "vision_with_projection": CLIPVisionConfig,
}
ARCHITECTURES = {
    "clip": "CLIPModel",
    "text": "CLIPTextModel",
    "text_with_projection": "CLIPTextModelWithProjection",
    "vision": "CLIPVisionModel",
    "vision_with_projection": "CLIPVisionModelWithProjection",
}


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


def open_weights(path: str) -> CheckpointReader:
    """A lazy reader over one weights file or shard index."""
    return _open_checkpoint(path)


def _strip_prefix(names) -> str:
    names = list(names)
    return "module." if names and all(n.startswith("module.") for n in names) else ""


def _looks_canonical(names) -> bool:
    return any(n.split(".")[0] in CANONICAL_ROOTS for n in names)


def _shapes(reader: CheckpointReader) -> dict[str, tuple[int, ...]]:
    return {n: tuple(reader.info(n)[0]) for n in reader.keys()}


def _load_config(path: str, kind: str):
    cls = CONFIG_CLASSES[kind]
    try:
        return cls.from_pretrained(path)
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
    raw = open_weights(path)
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
        from clip_core.formats import infer_model_kind

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
    return Source(reader, cfg, kind, source_kind, folder, notes)


def check_fits(reader: CheckpointReader, config, kind: str) -> None:
    """Names and shapes of the checkpoint against the model the config describes (no data read)."""
    expected = canonical_shapes(config, kind)
    names = [n for n in reader.keys() if not is_ignored(n)]
    missing = [n for n in expected if n not in reader.keys()]
    unexpected = [n for n in names if n not in expected]
    wrong = []
    for n in names:
        if n in expected:
            shape = tuple(reader.info(n)[0])
            if shape != expected[n] and not (n == "logit_scale" and shape == (1,)):
                wrong.append(f"{n}: checkpoint {shape}, config {expected[n]}")
    problems = []
    for label, items, sep in (
        ("missing", missing, ", "),
        ("unexpected", unexpected, ", "),
        ("wrong shape for", wrong, "; "),
    ):
        if items:
            problems.append(
                f"{label} {len(items)} tensor(s): {sep.join(items[:8])}{' ...' if len(items) > 8 else ''}"
            )
    if problems:
        raise CheckpointError(f"{reader.path} does not fit its config ({kind}): " + " | ".join(problems))


# ---------------------------------------------------------------------------------------------
# The streaming view the writers read from


class ConvertingView(CheckpointReader):
    """Canonical tensors of the source, cast to ``dtype`` (floating tensors only) as they are read."""

    def __init__(self, reader: CheckpointReader, dtype: str | None, on_read: Callable[[int], None] | None):
        super().__init__(reader.path)
        self._reader = reader
        self._dtype = extended_dtype(dtype) if dtype else None
        self._names = {n: None for n in reader.keys() if not is_ignored(n)}
        self._on_read = on_read

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
        if self._on_read is not None:
            self._on_read(array.nbytes)
        return array


# ---------------------------------------------------------------------------------------------
# Writing the destination folder


def _write_extras(src: Source, folder: str, notes: list[str]) -> None:
    from_folder = [f for f in TOKENIZER_FILES if src.folder and os.path.isfile(os.path.join(src.folder, f))]
    if from_folder:
        for f in from_folder:
            shutil.copyfile(os.path.join(src.folder, f), os.path.join(folder, f))
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
        shutil.copyfile(os.path.join(src.folder, PREPROCESSOR_FILE), os.path.join(folder, PREPROCESSOR_FILE))
    else:
        from clip_core.image_processing import CLIPImageProcessor

        vision = getattr(src.config, "vision_config", src.config)
        size = getattr(vision, "image_size", 224)
        CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ).save_pretrained(folder)


def _write_config(src: Source, folder: str, dtype: str | None) -> None:
    config = src.config
    config.extra.setdefault("architectures", [ARCHITECTURES[src.kind]])
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


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    formats=("safetensors",),
    dtype: str | None = None,
    overwrite: bool = False,
    progress=True,
    config: str | os.PathLike | None = None,
    hidden_act: str = "quick_gelu",
) -> ConversionSummary:
    """Convert ``source`` into the transformers folder ``destination``; see the module docstring.

    formats: any of "safetensors", "pt", "tf", "flax" or "all". dtype: None (keep), "fp32",
    "bf16" or "fp16" (floating tensors only). progress: True shows a bar on a terminal,
    "always" everywhere, False never. config: a config.json (or folder) to use instead of the
    source's own or an inferred one.
    """
    start = time.perf_counter()
    source, destination = os.fspath(source), os.path.abspath(os.fspath(destination))
    fmts = format_names(formats)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose from fp32, bf16, fp16")
    target_dtype = DTYPES[dtype]
    if os.path.exists(destination):
        if not os.path.isdir(destination):
            raise FileExistsError(f"{destination} exists and is not a folder")
        if not overwrite:
            raise FileExistsError(f"{destination} exists; pass overwrite=True (--overwrite) to replace it")
    src = open_source(source, None if config is None else os.fspath(config), hidden_act)
    parent, base = os.path.split(destination)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.converting-", dir=parent)
    notes = list(src.notes)
    try:
        with src.reader:
            names = [n for n in src.reader.keys() if not is_ignored(n)]
            infos = {n: src.reader.info(n) for n in names}
            tensors = len(names)
            parameters = sum(int(np.prod(shape)) for shape, _ in infos.values())
            total = sum(nbytes(*ConvertingView(src.reader, target_dtype, None).info(n)) for n in names)
            bar = _progress_bar(total * len(fmts), progress)
            view = ConvertingView(src.reader, target_dtype, bar.update if bar is not None else None)
            weight_files: list[str] = []
            try:
                for fmt in fmts:
                    if bar is not None:
                        bar.set_description(f"writing {fmt}")
                    weight_files += checkpoint_formats.save_checkpoint(view, tmp, fmt, model_kind=src.kind)
            finally:
                if bar is not None:
                    bar.close()
        _write_config(src, tmp, target_dtype)
        _write_extras(src, tmp, notes)
        written = sum(os.path.getsize(p) for p in weight_files)
        old = None
        if os.path.exists(destination):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(destination, os.path.join(old, base))
        os.rename(tmp, destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConversionSummary(
        source=source,
        destination=destination,
        source_kind=src.source_kind,
        model_kind=src.kind,
        formats=fmts,
        dtype=target_dtype,
        tensors=tensors,
        parameters=parameters,
        bytes=written,
        seconds=time.perf_counter() - start,
        files=sorted(os.listdir(destination)),
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clip-convert",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="transformers folder, weights file, or OpenAI / open_clip state dict")
    parser.add_argument("destination", help="folder to create (a complete transformers checkpoint)")
    parser.add_argument("--to", default="safetensors", choices=["safetensors", "pt", "tf", "flax", "all"])
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.add_argument("--config", default=None, help="config.json (or its folder) for a bare weights file")
    parser.add_argument(
        "--hidden-act",
        default="quick_gelu",
        choices=["quick_gelu", "gelu"],
        help="activation when the config is inferred (OpenAI: quick_gelu; most open_clip models: gelu)",
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_const", const="always", dest="progress", default=True)
    bar.add_argument("--no-progress", action="store_const", const=False, dest="progress")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            summary = convert(
                args.source,
                args.destination,
                formats=(args.to,),
                dtype=args.dtype,
                overwrite=args.overwrite,
                progress=args.progress,
                config=args.config,
                hidden_act=args.hidden_act,
            )
    except (CheckpointError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"clip-convert: error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
