"""Embedding collections of images and captions, written once against the encoder protocol.

    embed(model, images="photos/", texts=None, out="emb/")      # or clip-embed MODEL --images ... --out ...

Inputs (``plan_collection``):
- ``images``: a folder (searched recursively for image files), a glob, or webdataset ``.tar`` shards
  (brace patterns: ``data/{00000..00099}.tar``, read with clip_core.shards). A ``.txt`` beside an
  image file (same stem) and a sample's ``txt`` / ``json`` caption are its caption.
- ``texts``: a ``.txt`` (one caption a line) or a CSV / TSV / JSONL / JSON / parquet table with a
  caption column and, optionally, an image-path column (paths relative to ``images`` when that is a
  folder, else to the table's folder): a table with image paths pairs each caption with its image.

Work is cut into output shards: ``shard_size`` consecutive items of a file list or table, or one
webdataset tar (the input's own sharding). A shard is encoded by ``UnitEncoder``: images are decoded
and preprocessed (clip_core's CLIPImageProcessor, one image per task) on a thread pool, a few
batches ahead of the encoder, so PIL (which releases the GIL) runs while the model computes;
captions are tokenised at once, sorted by token length and batched in that order, so a batch is
padded only to its own longest caption; rows come back in input order.

Output (``FolderSink``), clip-retrieval's layout, so its indexing tools read ours:
``img_emb/img_emb_N.npy`` and ``text_emb/text_emb_N.npy`` (L2-normalised, float32 or float16; a row
whose item has no caption is zeros), ``metadata/metadata_N.parquet`` (image_path -- the path, or the
sample key of a tar --, caption, width, height of the decoded image, index of the item in its input:
the file list, the table, or its tar shard; ``shard``: the tar), ``errors.parquet`` (items skipped:
unreadable images, with the reason) and ``manifest.json`` (model, backend, dtype, settings, the
inputs' fingerprint, the finished shards and the counts). Each file is written atomically and a
shard counts as finished once the manifest lists it, so a rerun skips finished shards and rewrites
the others identically; another model or other settings in an existing folder are refused.

The Ray Data engine (clip_core.embedding_ray) runs the same ``UnitEncoder`` in its actors.
pyarrow (parquet) and tqdm (progress bar) come with the ``[embed]`` extra.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .encoder import dtype_name, load_encoder
from .files import atomic_path, atomic_write_text, resolve_folder
from .image_inputs import decode_image
from .shards import (
    IMAGE_SUFFIXES,
    ShardError,
    iter_samples,
    list_shards,
    sample_caption,
    sample_image,
)

MANIFEST = "manifest.json"
ERRORS = "errors.parquet"
FORMAT = "clip-multibackend embeddings 1"
CAPTION_COLUMNS = ("caption", "text", "title")
IMAGE_COLUMNS = ("image_path", "image", "filepath", "file_name", "file", "path")
TABLE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class EmbedError(ValueError):
    """Bad input or output for an embedding run: the message names the file, flag or folder."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise an ImportError naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{purpose} needs {module.split('.')[0]}: pip install 'clip-multibackend[{extra}]'"
        ) from None


# --------------------------------------------------------------------------------------------------
# Inputs: items, shards of work ("units"), the collection
# --------------------------------------------------------------------------------------------------


@dataclass
class Item:
    index: int  # position in its input: the file list, the table, or its tar shard
    path: str | None  # image file, or the sample key of a tar
    caption: str | None
    data: bytes | None = None  # image bytes of a tar sample
    error: str | None = None  # known to be unusable before decoding (a sample without an image)


@dataclass
class Unit:
    """One output shard's worth of work: rows ``(index, image path, caption)`` or one tar shard."""

    number: int
    rows: list[tuple[int, str | None, str | None]] | None = None
    tar: str | None = None

    def items(self, with_images: bool, with_texts: bool) -> Iterator[Item]:
        if self.tar is None:
            for index, path, caption in self.rows:
                yield Item(index, path, caption if with_texts else None)
            return
        for sample in iter_samples(self.tar):
            image = sample_image(sample)
            caption = sample_caption(sample) if with_texts else None
            data = image[1] if image else None
            error = "the sample has no image" if with_images and image is None else None
            yield Item(sample.index, sample.key, caption, data, error)

    def to_json(self) -> str:
        return json.dumps({"number": self.number, "rows": self.rows, "tar": self.tar})

    @classmethod
    def from_json(cls, text: str) -> Unit:
        data = json.loads(text)
        rows = None if data["rows"] is None else [tuple(row) for row in data["rows"]]
        return cls(data["number"], rows, data["tar"])


@dataclass
class Collection:
    kind: str  # "files", "webdataset", "table" (captions with image paths), "captions"
    units: list[Unit]
    has_images: bool
    has_texts: bool
    count: int | None  # items (None for webdataset input: known once read)
    inputs: dict  # what the manifest records about the inputs, fingerprint included


def _is_webdataset(names: Sequence[str]) -> bool:
    return bool(names) and all(os.fspath(n).endswith(_TAR_SUFFIXES) for n in names)


def list_images(images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Image files of a folder (recursive, by image extension), a glob or a list of files; sorted."""
    patterns = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    found: list[str] = []
    for pattern in map(os.fspath, patterns):
        if os.path.isdir(pattern):
            for root, folders, files in os.walk(pattern):
                folders.sort()
                found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
        elif glob.has_magic(pattern):
            found += sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        elif os.path.isfile(pattern):
            found.append(pattern)
        else:
            raise EmbedError(f"--images {pattern!r}: no such folder, file or glob match")
    if not found:
        raise EmbedError(f"--images {images!r}: no image files found")
    return sorted(dict.fromkeys(found))


def _pick_column(columns: Sequence[str], asked: str | None, defaults: tuple[str, ...], path: str, flag: str):
    if asked is not None:
        if asked not in columns:
            raise EmbedError(f"{path}: no column {asked!r} ({flag}); its columns are {list(columns)}")
        return asked
    return next((c for c in defaults if c in columns), None)


def _text_or_none(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # null / NaN
        return None
    return str(value)


def read_table(
    path: str, caption_column: str | None = None, image_column: str | None = None
) -> tuple[list[str | None], list[str] | None]:
    """Captions (and image paths, if the table has an image column) of a caption file, in row order."""
    if not os.path.isfile(path):
        raise EmbedError(f"--texts {path!r}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise EmbedError(f"--texts {path!r}: unknown format; use one of {', '.join(TABLE_SUFFIXES)}")
    if suffix == ".txt":
        if image_column is not None:
            raise EmbedError(f"{path}: a .txt holds captions only; --image-column needs a table")
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [line.rstrip("\r") for line in lines], None
    records = _read_records(path, suffix)
    columns = list(records)
    caption = _pick_column(columns, caption_column, CAPTION_COLUMNS, path, "--caption-column")
    if caption is None:
        raise EmbedError(
            f"{path}: no caption column (tried {list(CAPTION_COLUMNS)}; its columns are {columns})"
        )
    image = _pick_column(columns, image_column, IMAGE_COLUMNS, path, "--image-column")
    captions = [_text_or_none(v) for v in records[caption]]
    if image is None:
        return captions, None
    paths = [_text_or_none(v) for v in records[image]]
    missing = [i for i, p in enumerate(paths) if not p]
    if missing:
        raise EmbedError(f"{path}: row {missing[0]} has no image path in column {image!r}")
    return captions, paths


def _read_records(path: str, suffix: str) -> dict[str, list]:
    """A table as columns of values (every row's keys, in first-seen order)."""
    if suffix == ".parquet":
        parquet = require("pyarrow.parquet", "embed", "reading a parquet caption table")
        try:
            return parquet.read_table(path).to_pydict()
        except Exception as e:  # pyarrow raises its own error types for bad files
            raise EmbedError(f"{path}: not a readable parquet file ({e})") from None
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if suffix in (".csv", ".tsv"):
                rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
            elif suffix == ".json":
                rows = json.load(f)
                if not isinstance(rows, list):
                    raise EmbedError(f"{path}: a .json caption table must hold a list of objects")
            else:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as e:
                            raise EmbedError(f"{path}: line {number} is not JSON ({e})") from None
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError) as e:
        raise EmbedError(f"{path}: cannot read it as {suffix[1:]} ({e})") from None
    columns: dict[str, list] = {}
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise EmbedError(f"{path}: row {number} is not an object with named fields")
        for key in row:
            columns.setdefault(key, [])
    for name, values in columns.items():
        values.extend(row.get(name) for row in rows)
    return columns


def _fingerprint(kind: str, entries: Iterable) -> str:
    digest = hashlib.sha256(kind.encode())
    for entry in entries:
        digest.update(json.dumps(entry, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _row_units(rows: list[tuple], shard_size: int) -> list[Unit]:
    return [
        Unit(n, rows[start : start + shard_size]) for n, start in enumerate(range(0, len(rows), shard_size))
    ]


def plan_collection(
    images=None,
    texts=None,
    shard_size: int = 10_000,
    caption_column: str | None = None,
    image_column: str | None = None,
    with_texts: bool | None = None,
) -> Collection:
    """The items of a run, cut into shards of work; see the module docstring for the inputs.

    ``with_texts``: embed the captions that image inputs carry (None: when the first item has one).
    """
    if images is None and texts is None:
        raise EmbedError("nothing to embed: give --images, --texts or both")
    if shard_size < 1:
        raise EmbedError(f"--shard-size must be at least 1, got {shard_size}")
    spec = {"images": _spec(images), "texts": None if texts is None else os.fspath(texts)}
    if texts is not None:
        texts = os.fspath(texts)
        captions, paths = read_table(texts, caption_column, image_column)
        if paths is None:
            if images is not None:
                raise EmbedError(
                    f"--texts {texts!r} has no image column to pair its captions with --images: give the table "
                    "an image-path column (--image-column NAME), or embed images and captions in separate runs"
                )
            rows = [(i, None, c) for i, c in enumerate(captions)]
            kind = "captions"
        else:
            root = os.fspath(images) if images is not None else os.path.dirname(os.path.abspath(texts))
            if not os.path.isdir(root):
                raise EmbedError(
                    f"--images {root!r}: with a caption table it must be the folder of its images"
                )
            rows = [(i, os.path.join(root, p), c) for i, (p, c) in enumerate(zip(paths, captions))]
            kind = "table"
        if with_texts is False:
            rows = [(i, p, None) for i, p, _ in rows]
        if kind == "captions" and with_texts is False:
            raise EmbedError("--no-texts leaves nothing to embed in a captions-only run")
        fingerprint = _fingerprint(kind, rows)
        spec.update(
            kind=kind, fingerprint=fingerprint, caption_column=caption_column, image_column=image_column
        )
        return Collection(
            kind, _row_units(rows, shard_size), kind == "table", with_texts is not False, len(rows), spec
        )

    names = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if _is_webdataset([os.fspath(n) for n in names]):
        try:
            shards = list_shards(names)
        except (ShardError, ValueError) as e:
            raise EmbedError(f"--images: {e}") from None
        if with_texts is None:
            first = next(Unit(0, tar=shards[0]).items(True, True), None)
            with_texts = first is not None and first.caption is not None
        fingerprint = _fingerprint("webdataset", [(s, os.path.getsize(s)) for s in shards])
        spec.update(kind="webdataset", fingerprint=fingerprint)
        units = [Unit(n, tar=s) for n, s in enumerate(shards)]
        return Collection("webdataset", units, True, bool(with_texts), None, spec)

    files = list_images(images)
    if with_texts is None:
        with_texts = os.path.isfile(_sidecar(files[0]))
    rows = [(i, path, _read_sidecar(path) if with_texts else None) for i, path in enumerate(files)]
    spec.update(kind="files", fingerprint=_fingerprint("files", rows))
    return Collection("files", _row_units(rows, shard_size), True, bool(with_texts), len(rows), spec)


def _spec(images):
    if images is None or isinstance(images, (str, os.PathLike)):
        return None if images is None else os.fspath(images)
    return [os.fspath(i) for i in images]


def _sidecar(path: str) -> str:
    return os.path.splitext(path)[0] + ".txt"


def _read_sidecar(path: str) -> str | None:
    try:
        with open(_sidecar(path), encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------------------
# Encoding one unit: threaded decode overlapped with compute; captions bucketed by length
# --------------------------------------------------------------------------------------------------


@dataclass
class UnitResult:
    number: int
    image: np.ndarray | None  # (rows, dim) float32
    text: np.ndarray | None
    columns: dict[str, list] = field(default_factory=dict)  # metadata, one entry per row
    errors: list[dict] = field(default_factory=list)
    items: int = 0  # items read, rows + errors

    @property
    def rows(self) -> int:
        return len(self.columns["index"])

    def to_bytes(self) -> bytes:
        """The result as one npz blob (arrays + JSON metadata): how Ray actors send it to the driver."""
        arrays = {"meta": np.frombuffer(json.dumps(self._meta()).encode(), np.uint8)}
        arrays.update({k: v for k, v in (("image", self.image), ("text", self.text)) if v is not None})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def _meta(self) -> dict:
        return {"number": self.number, "columns": self.columns, "errors": self.errors, "items": self.items}

    @classmethod
    def from_bytes(cls, data: bytes) -> UnitResult:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes())
            image = npz["image"] if "image" in npz.files else None
            text = npz["text"] if "text" in npz.files else None
        return cls(meta["number"], image, text, meta["columns"], meta["errors"], meta["items"])


class UnitEncoder:
    """Encodes units: images on ``num_workers`` threads a few batches ahead of the encoder, captions
    sorted by token length into batches padded to their own longest caption (short captions in
    batches of up to ``batch_size`` times the context length in tokens: see ``_text_batches``).

    ``progress``: a callable taking a number of finished embeddings (a tqdm bar's ``update``).
    """

    def __init__(
        self,
        encoder,
        image_processor,
        tokenizer,
        batch_size: int = 32,
        num_workers: int | None = None,
        with_images: bool = True,
        with_texts: bool = True,
        prefetch: int = 2,
    ):
        if batch_size < 1:
            raise EmbedError(f"--batch-size must be at least 1, got {batch_size}")
        self.encoder, self.image_processor, self.tokenizer = encoder, image_processor, tokenizer
        self.batch_size, self.prefetch = batch_size, max(1, prefetch)
        self.with_images, self.with_texts = with_images, with_texts
        self.dim = int(encoder.config.projection_dim)
        self.max_length = int(encoder.config.text_config.max_position_embeddings)
        self.num_workers = default_workers() if num_workers is None else max(1, int(num_workers))
        self._pool = (
            ThreadPoolExecutor(self.num_workers, thread_name_prefix="clip-embed") if with_images else None
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> UnitEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- images ----------------------------------------------------------------------------------

    def _prepare(self, item: Item):
        """Decode + preprocess one image (on a worker thread): (pixels, width, height) or an error string."""
        if item.error is not None:
            return item.error
        try:
            image = decode_image(item.data if item.data is not None else item.path)
            pixels = self.image_processor(image, return_tensors="np", num_threads=1)["pixel_values"][0]
        except Exception as e:  # any unreadable image is skipped and reported, never fatal
            return f"{type(e).__name__}: {e}"
        return pixels, image.width, image.height

    def _batches(self, items: Iterator[Item]) -> Iterator[list[Item]]:
        batch: list[Item] = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _encode_images(self, items: Iterator[Item], result: UnitResult, kept: list[Item], progress) -> None:
        embeddings, width, height = [], [], []
        in_flight: deque = deque()

        def finish(batch, futures):
            outcomes = [f.result() for f in futures]
            good = [o for o in outcomes if not isinstance(o, str)]
            for item, outcome in zip(batch, outcomes):
                if isinstance(outcome, str):
                    result.errors.append({"index": item.index, "path": item.path, "error": outcome})
                else:
                    kept.append(item)
            if good:
                embeddings.append(self.encoder.encode_images(np.stack([o[0] for o in good])))
                width.extend(o[1] for o in good)
                height.extend(o[2] for o in good)
            if progress:
                progress(len(batch))

        for batch in self._batches(items):
            result.items += len(batch)
            in_flight.append((batch, [self._pool.submit(self._prepare, item) for item in batch]))
            if len(in_flight) > self.prefetch:
                finish(*in_flight.popleft())
        while in_flight:
            finish(*in_flight.popleft())
        result.image = np.concatenate(embeddings) if embeddings else np.zeros((0, self.dim), np.float32)
        result.columns.update(width=width, height=height)

    # -- texts -----------------------------------------------------------------------------------

    def _text_batches(self, sorted_lengths: np.ndarray) -> Iterator[slice]:
        """Slices of the captions sorted by length: ``batch_size`` rows, or ``batch_size`` times a power
        of two where the captions are short, as long as the batch holds no more tokens than
        ``batch_size`` captions of the full context would (fewer, larger calls for short captions)."""
        budget = self.batch_size * self.max_length
        start, count = 0, len(sorted_lengths)
        while start < count:
            rows = self.batch_size
            while (
                rows * 2 * sorted_lengths[min(start + rows * 2, count) - 1] <= budget and start + rows < count
            ):
                rows *= 2
            yield slice(start, min(start + rows, count))
            start += rows

    def encode_captions(self, captions: Sequence[str | None], progress=None) -> np.ndarray:
        """(len(captions), dim) float32 in input order; a None caption gives a row of zeros."""
        out = np.zeros((len(captions), self.dim), np.float32)
        present = [i for i, c in enumerate(captions) if c is not None]
        if not present:
            return out
        ids = self.tokenizer([captions[i] for i in present], truncation=True, max_length=self.max_length)
        ids = ids["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        order = np.argsort(lengths, kind="stable")
        pad = self.tokenizer.pad_token_id
        for rows in self._text_batches(lengths[order]):
            rows = order[rows]
            width = int(lengths[rows].max())
            batch_ids = np.full((len(rows), width), pad, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for r, row in enumerate(rows):
                batch_ids[r, : lengths[row]] = ids[row]
                mask[r, : lengths[row]] = 1
            out[np.asarray(present)[rows]] = self.encoder.encode_texts(batch_ids, mask)
            if progress:
                progress(len(rows))
        return out

    # -- a unit ----------------------------------------------------------------------------------

    def encode(self, unit: Unit, progress=None) -> UnitResult:
        result = UnitResult(unit.number, None, None)
        items = _guarded(unit, unit.items(self.with_images, self.with_texts), result.errors)
        kept: list[Item] = []
        if self.with_images:
            self._encode_images(items, result, kept, progress)
        else:
            kept = list(items)
            result.items = len(kept)
        columns = {"index": [item.index for item in kept]}
        if self.with_images:
            columns["image_path"] = [item.path for item in kept]
            columns.update(width=result.columns["width"], height=result.columns["height"])
        if self.with_texts:
            columns["caption"] = [item.caption for item in kept]
            result.text = self.encode_captions(columns["caption"], progress)
        if unit.tar is not None:
            columns["tar"] = [unit.tar] * len(kept)
        result.columns = columns
        for error in result.errors:
            error["shard"] = unit.number
        return result


def _guarded(unit: Unit, items: Iterator[Item], errors: list[dict]) -> Iterator[Item]:
    """The items, ending early with an error row where a tar shard turns out truncated or corrupt."""
    try:
        yield from items
    except ShardError as e:
        errors.append({"index": None, "path": unit.tar, "error": str(e)})


def default_workers() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))


# --------------------------------------------------------------------------------------------------
# Model, processor, tokenizer
# --------------------------------------------------------------------------------------------------


def load_preprocessing(model, config):
    """The image processor and tokenizer of a checkpoint folder (or Hub id); defaults sized to
    ``config`` (OpenAI's normalisation, the bundled vocabulary) where the folder has none."""
    from .image_processing import IMAGE_PROCESSOR_NAME, CLIPImageProcessor

    folder = resolve_folder(model) if isinstance(model, (str, os.PathLike)) else None
    if folder is not None and os.path.isfile(os.path.join(folder, IMAGE_PROCESSOR_NAME)):
        image_processor = CLIPImageProcessor.from_pretrained(folder)
    else:
        size = config.vision_config.image_size
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)
    return image_processor, _load_tokenizer(folder)


def _load_tokenizer(folder: str | None):
    try:
        from .tokenization_fast import CLIPTokenizerFast as tokenizer_class
    except ImportError:  # no `tokenizers` package: the pure-Python tokenizer gives the same ids
        from .tokenization import CLIPTokenizer as tokenizer_class
    if folder is not None:
        with contextlib.suppress(FileNotFoundError):
            return tokenizer_class.from_pretrained(folder)
    return tokenizer_class()


def model_name(model) -> str:
    """How the manifest names a model: a local folder by its absolute path, a Hub id as it is."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return os.path.abspath(path) if os.path.exists(path) else path
    return f"<{type(model).__name__} object>"


def unit_encoder_for(encoder, model, spec: dict) -> UnitEncoder:
    """The UnitEncoder of a run: ``encoder`` with the preprocessing of ``model`` (a folder or Hub id,
    or None for defaults), settings from ``spec`` (the JSON-able settings a Ray actor receives)."""
    image_processor, tokenizer = load_preprocessing(model, encoder.config)
    keys = ("batch_size", "num_workers", "with_images", "with_texts")
    return UnitEncoder(encoder, image_processor, tokenizer, *(spec[k] for k in keys))


def ray_worker(spec: dict):
    """What each Ray actor runs (clip_core.embedding_ray): a unit's JSON -> its UnitResult's bytes."""
    encoder = load_encoder(spec["model"], spec["backend"], spec["dtype"])
    unit_encoder = unit_encoder_for(encoder, spec["model"], spec)
    return lambda text: unit_encoder.encode(Unit.from_json(text)).to_bytes()


# --------------------------------------------------------------------------------------------------
# Output: a folder in clip-retrieval's layout, or arrays in memory
# --------------------------------------------------------------------------------------------------


def shard_files(out: str, number: int) -> dict[str, str]:
    return {
        "image": os.path.join(out, "img_emb", f"img_emb_{number}.npy"),
        "text": os.path.join(out, "text_emb", f"text_emb_{number}.npy"),
        "metadata": os.path.join(out, "metadata", f"metadata_{number}.parquet"),
    }


def read_manifest(out: str | os.PathLike) -> dict:
    path = os.path.join(os.fspath(out), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise EmbedError(f"{out}: no {MANIFEST}; is it a clip-embed output folder?") from None
    except ValueError as e:
        raise EmbedError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EmbedError(f"{path}: not a clip-embed manifest (format {FORMAT!r})")
    return manifest


def _write_npy(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


_ERROR_COLUMNS = ("shard", "index", "path", "error")


class FolderSink:
    """Writes units into ``out`` (shard files, errors.parquet, manifest.json), resuming a previous run.

    ``settings`` identify what the files hold (model, backend, dtypes, batch and shard sizes, inputs);
    an existing folder made with other settings is refused. A lock file keeps two runs apart.
    """

    def __init__(self, out: str | os.PathLike, settings: dict, header: dict):
        self.pa = require("pyarrow", "embed", "writing embeddings")
        self.pq = require("pyarrow.parquet", "embed", "writing embeddings")
        self.out = os.fspath(out)
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise EmbedError(f"--out {self.out!r} is a file, not a folder")
        self._created = not os.path.exists(self.out)
        os.makedirs(self.out, exist_ok=True)
        self._lock = _lock_folder(self.out)
        self.settings = settings
        manifest_path = os.path.join(self.out, MANIFEST)
        if os.path.exists(manifest_path):
            self.manifest = read_manifest(self.out)
            self._check_settings(self.manifest.get("settings", {}))
        else:
            if any(not name.startswith(".") for name in os.listdir(self.out)):
                self._lock.close()
                raise EmbedError(f"--out {self.out!r} is not empty and holds no {MANIFEST}: use a new folder")
            self.manifest = {
                "format": FORMAT,
                "settings": settings,
                **header,
                "shards": {},
                "complete": False,
            }
        self._remove_partial_files()
        self.errors = self._read_errors()

    def _check_settings(self, previous: dict) -> None:
        changed = [
            k for k in sorted(set(previous) | set(self.settings)) if previous.get(k) != self.settings.get(k)
        ]
        if changed:
            self._lock.close()
            details = "; ".join(
                f"{k}: {previous.get(k)!r} there, {self.settings.get(k)!r} now" for k in changed
            )
            raise EmbedError(
                f"--out {self.out!r} holds embeddings made with other settings ({details}); "
                "use another --out folder, or the same settings to resume"
            )

    def _remove_partial_files(self) -> None:
        """Temporary files of a run that was killed mid-write (atomic_path names them .NAME.XXXX.tmp)."""
        for folder in (
            self.out,
            *(os.path.join(self.out, sub) for sub in ("img_emb", "text_emb", "metadata")),
        ):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(".") and name.endswith(".tmp"):
                        os.remove(os.path.join(folder, name))

    def _read_errors(self) -> list[dict]:
        path = os.path.join(self.out, ERRORS)
        if not os.path.exists(path):
            return []
        table = self.pq.read_table(path).to_pydict()
        return [dict(zip(table, values)) for values in zip(*table.values())]

    def finished(self, number: int) -> bool:
        if str(number) not in self.manifest["shards"]:
            return False
        files = shard_files(self.out, number)
        needed = (
            ["metadata"] + ["image"] * self.manifest["has_images"] + ["text"] * self.manifest["has_texts"]
        )
        return all(os.path.isfile(files[k]) for k in needed)

    def write(self, result: UnitResult, output_dtype: str) -> None:
        files = shard_files(self.out, result.number)
        for kind, array in (("image", result.image), ("text", result.text)):
            if array is not None:
                _write_npy(files[kind], array.astype(output_dtype))
        table = self.pa.table(_metadata_columns(result.columns, self.pa))
        with atomic_path(files["metadata"]) as tmp:
            self.pq.write_table(table, tmp)
        self.errors = [e for e in self.errors if e["shard"] != result.number] + [
            {k: e.get(k) for k in _ERROR_COLUMNS} for e in result.errors
        ]
        self._write_errors()
        self.manifest["shards"][str(result.number)] = {
            "rows": result.rows,
            "errors": len(result.errors),
            "items": result.items,
        }
        self.manifest["shards"] = dict(sorted(self.manifest["shards"].items(), key=lambda kv: int(kv[0])))
        self._write_manifest()

    def _write_errors(self) -> None:
        pa = self.pa
        schema = pa.schema(
            [("shard", pa.int64()), ("index", pa.int64()), ("path", pa.string()), ("error", pa.string())]
        )
        rows = sorted(self.errors, key=lambda e: (e["shard"], -1 if e["index"] is None else e["index"]))
        table = pa.table({k: [e[k] for e in rows] for k in _ERROR_COLUMNS}, schema=schema)
        with atomic_path(os.path.join(self.out, ERRORS)) as tmp:
            self.pq.write_table(table, tmp)

    def _write_manifest(self) -> None:
        shards = self.manifest["shards"].values()
        self.manifest["counts"] = {
            "rows": sum(s["rows"] for s in shards),
            "errors": sum(s["errors"] for s in shards),
            "items": sum(s["items"] for s in shards),
        }
        atomic_write_text(os.path.join(self.out, MANIFEST), json.dumps(self.manifest, indent=2) + "\n")

    def close(self, complete: bool) -> None:
        if complete:
            if not os.path.exists(os.path.join(self.out, ERRORS)):
                self._write_errors()
            self.manifest["complete"] = True
            self._write_manifest()
        self._lock.close()
        if self._created and not complete and os.listdir(self.out) == [".lock"]:
            os.remove(os.path.join(self.out, ".lock"))  # a run that failed before writing leaves no folder
            os.rmdir(self.out)


def _metadata_columns(columns: dict[str, list], pa) -> dict:
    types = {"index": pa.int64(), "width": pa.int32(), "height": pa.int32()}
    order = ("image_path", "caption", "width", "height", "index", "tar")
    return {k: pa.array(columns[k], types.get(k, pa.string())) for k in order if k in columns}


def _lock_folder(out: str):
    """An exclusive lock on OUT/.lock for the duration of a run (POSIX; a no-op where fcntl is missing)."""
    handle = open(os.path.join(out, ".lock"), "a")  # noqa: SIM115 - held until close()
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        handle.close()
        raise EmbedError(f"--out {out!r} is in use by another clip-embed run") from None
    return handle


class MemorySink:
    """Collects units in memory: what ``embed(..., out=None)`` returns."""

    def __init__(self):
        self.results: list[UnitResult] = []

    def finished(self, number: int) -> bool:
        return False

    def write(self, result: UnitResult, output_dtype: str) -> None:
        self.results.append(result)

    def close(self, complete: bool) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass
class EmbedResult:
    """What a run did; with ``out=None`` also the arrays (``image_embeddings``, ``text_embeddings``),
    the ``metadata`` columns and the ``errors``."""

    out: str | None
    items: int
    rows: int
    errors: int
    shards_written: int
    shards_skipped: int
    seconds: float
    image_embeddings: np.ndarray | None = None
    text_embeddings: np.ndarray | None = None
    metadata: dict[str, list] | None = None
    error_list: list[dict] | None = None

    def __str__(self) -> str:
        where = f" in {self.out}" if self.out else ""
        rate = self.items / self.seconds if self.seconds > 0 else 0.0
        return (
            f"embedded {self.rows} of {self.items} items{where} ({self.errors} skipped as unreadable; "
            f"{self.shards_written} shards written, {self.shards_skipped} already done) "
            f"in {self.seconds:.1f}s ({rate:.1f} items/s)"
        )


def _progress_bar(total: int | None, quiet: bool, description: str):
    if quiet:
        return None
    tqdm = require("tqdm", "embed", "the progress bar (or quiet=True)").tqdm
    return tqdm(total=total, unit="emb", desc=description, dynamic_ncols=True, smoothing=0.1)


def embed(
    model,
    images=None,
    texts=None,
    out: str | os.PathLike | None = None,
    *,
    backend: str = "torch",
    dtype: str | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    shard_size: int = 10_000,
    output_dtype: str = "float32",
    caption_column: str | None = None,
    image_column: str | None = None,
    with_texts: bool | None = None,
    engine: str = "local",
    num_actors: int = 2,
    ray_address: str | None = None,
    quiet: bool = True,
) -> EmbedResult:
    """Embed a collection of images and/or captions (see the module docstring for inputs and output).

    Args:
        model: a checkpoint folder or cached Hub id (any backend loads it), or an encoder object
            (``clip_core.encoder.load_encoder``; the local engine only).
        images / texts: the inputs; ``with_texts=False`` ignores captions that images carry.
        out: the output folder; None returns the arrays in an EmbedResult instead.
        backend / dtype: the encoder (``clip_core.encoder.BACKENDS``; dtype fp32, bf16, fp16).
        batch_size: rows per encoder call; num_workers: image decoding threads (None: the CPUs, at most 8).
        shard_size: rows per output shard (webdataset input: one output shard per tar).
        output_dtype: "float32" or "float16" for the stored embeddings.
        engine: "local" (threads in this process) or "ray" (Ray Data, ``num_actors`` encoders, on the
            cluster at ``ray_address`` or a local Ray started for the run).
        quiet: no progress bar.
    """
    from .encoder import BACKENDS

    start = time.perf_counter()
    if backend not in BACKENDS:
        raise EmbedError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if output_dtype not in ("float32", "float16"):
        raise EmbedError(f"output dtype {output_dtype!r}: choose float32 or float16")
    if engine not in ("local", "ray"):
        raise EmbedError(f"--engine {engine!r}: choose local or ray")
    try:
        compute_dtype = dtype_name(dtype)
    except ValueError as e:
        raise EmbedError(f"--dtype: {e}") from None
    collection = plan_collection(images, texts, shard_size, caption_column, image_column, with_texts)

    is_path = isinstance(model, (str, os.PathLike))
    if engine == "ray" and not is_path:
        raise EmbedError("the ray engine loads the model in each actor: pass a checkpoint folder or Hub id")
    settings = {
        "model": model_name(model),
        "backend": backend,
        "dtype": compute_dtype,
        "output_dtype": output_dtype,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "inputs": collection.inputs,
    }
    header = {"has_images": collection.has_images, "has_texts": collection.has_texts, "num_shards": None}
    if collection.kind != "webdataset":
        header["num_shards"] = len(collection.units)
    # The folder is checked (and another run's settings refused) before the model loads.
    sink = MemorySink() if out is None else FolderSink(out, settings, header)
    todo = [unit for unit in collection.units if not sink.finished(unit.number)]
    skipped = len(collection.units) - len(todo)
    parts = collection.has_images + collection.has_texts
    total = None if collection.count is None else collection.count * parts
    bar = None
    complete = False
    written = 0
    try:
        encoder = model if not is_path else None
        if is_path and todo and engine == "local":
            encoder = load_encoder(model, backend, dtype)
        bar = _progress_bar(total, quiet, "clip-embed")
        if bar is not None and total is not None:
            waiting = {unit.number for unit in todo}
            bar.update(parts * sum(len(u.rows) for u in collection.units if u.number not in waiting))
        worker_spec = {
            "model": model_name(model) if is_path else None,
            "backend": backend,
            "dtype": dtype,
            "batch_size": batch_size,
            "num_workers": num_workers,
            "with_images": collection.has_images,
            "with_texts": collection.has_texts,
        }
        if engine == "ray":
            from .embedding_ray import ray_map_units

            blobs = ray_map_units(
                [u.to_json() for u in todo], ray_worker, worker_spec, num_actors, ray_address, quiet
            )
            results = (UnitResult.from_bytes(blob) for blob in blobs)
        elif todo:
            results = _local_unit_results(todo, encoder, model if is_path else None, worker_spec, bar)
        else:
            results = iter(())
        errors = 0
        for result in results:
            if bar is not None and engine == "ray":
                bar.update(result.items * parts)
            sink.write(result, output_dtype)
            errors += len(result.errors)
            written += 1
            if bar is not None:
                bar.set_postfix(errors=errors, refresh=False)
        complete = True
    finally:
        if bar is not None:
            bar.close()
        sink.close(complete)
    return _summary(out, sink, written, skipped, time.perf_counter() - start, output_dtype)


def _local_unit_results(units: list[Unit], encoder, model, spec: dict, bar) -> Iterator[UnitResult]:
    with unit_encoder_for(encoder, model, spec) as unit_encoder:
        for unit in units:
            yield unit_encoder.encode(unit, None if bar is None else bar.update)


def _summary(out, sink, written: int, skipped: int, seconds: float, output_dtype: str) -> EmbedResult:
    if isinstance(sink, FolderSink):
        counts = (
            sink.manifest["counts"] if "counts" in sink.manifest else {"items": 0, "rows": 0, "errors": 0}
        )
        return EmbedResult(
            os.fspath(out), counts["items"], counts["rows"], counts["errors"], written, skipped, seconds
        )
    results = sink.results

    def stacked(name):
        arrays = [getattr(r, name) for r in results if getattr(r, name) is not None]
        return np.concatenate(arrays).astype(output_dtype) if arrays else None

    metadata: dict[str, list] = {}
    for result in results:
        for key, values in result.columns.items():
            metadata.setdefault(key, []).extend(values)
    errors = [e for r in results for e in r.errors]
    return EmbedResult(
        None,
        sum(r.items for r in results),
        sum(r.rows for r in results),
        len(errors),
        written,
        skipped,
        seconds,
        stacked("image"),
        stacked("text"),
        metadata,
        errors,
    )


def load_embeddings(out: str | os.PathLike, kind: str = "image") -> tuple[np.ndarray, list[int]]:
    """All ``kind`` ("image" or "text") embeddings of an output folder as one float32 array, in shard
    order, and the row count of each shard (to map a row back to its shard's metadata)."""
    manifest = read_manifest(out)
    if not manifest.get(f"has_{kind}s"):
        raise EmbedError(f"{out}: holds no {kind} embeddings")
    arrays, counts = [], []
    for number in manifest["shards"]:
        path = shard_files(os.fspath(out), int(number))[kind]
        array = np.load(path, allow_pickle=False)
        arrays.append(array.astype(np.float32, copy=False))
        counts.append(array.shape[0])
    if not arrays:
        raise EmbedError(f"{out}: no finished shards")
    return np.concatenate(arrays), counts


__all__ = [
    "Collection",
    "EmbedError",
    "EmbedResult",
    "FolderSink",
    "UnitEncoder",
    "embed",
    "list_images",
    "load_embeddings",
    "plan_collection",
    "read_manifest",
    "read_table",
]
