"""Image-caption data for CLIP training: caption files, a synthetic shapes set, and a prefetching loader.

Datasets are small index-able objects: ``len(ds)``, ``ds.load(i) -> (image, caption)`` (the image is
anything clip_core's CLIPImageProcessor takes), ``ds.caption(i)``, ``ds.label(i)`` (a class index or -1)
and ``ds.class_names`` (for zero-shot evaluation; empty when there are no classes).

- ``CaptionDataset(data_dir, captions_file)`` reads a JSONL (``{"image": ..., "caption": ...}`` per
  line) or a CSV (a header naming an image and a caption column) of image paths relative to
  ``data_dir``. Rows that cannot be used (bad JSON, a missing field, a missing or unreadable image
  file) are reported in ``ds.problems`` and through ``logging`` and left out, never used silently.
- ``SyntheticShapes(n, image_size, seed)`` draws coloured shapes on noisy backgrounds with captions
  such as "a red circle"; its classes are all colour-shape pairs, so it needs no download.
  ``ds.mask(i)`` gives the pixels example i's shape covers (for checking where a model looks).

``BatchLoader`` turns a dataset and a list of example indices into batches of numpy arrays
(``input_ids``, ``attention_mask``, ``pixel_values``) through the processor. The order is a pure
function of ``(seed, step)``: epoch ``e`` visits the indices in ``permutation(seed, e)``, batch ``k``
of the epoch takes the next ``batch_size`` of them. So a run resumed at step ``s`` sees exactly the
batches an uninterrupted run sees, with no loader state to save. An image that fails to decode at
load time is reported, remembered and replaced by the next loadable example of the epoch's order
(deterministic, because the failure is). Each process of a multi-host run loads only its own
contiguous share of every global batch.

For data larger than a host wants to index: ``ShardLoader`` streams webdataset shards
(clip_core.shards), each host reading only its own shards through its own streams (``iter_stream``:
a per-epoch shuffled shard order, shuffled in blocks), decoding on a thread pool ahead of the step,
with every batch carrying the stream positions to save in a checkpoint and resume from exactly.
``ShardSamples`` holds a few shards in memory as a held-out set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from clip_core.image_inputs import decode_image
from clip_core.probe import COLOURS, SHAPES  # one palette: clip-export probes what this trains on

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "image_path", "file_name", "filename", "file", "path")
CAPTION_KEYS = ("caption", "text", "captions", "title")


class DataError(ValueError):
    """A dataset that cannot be used at all (no usable rows, an unknown file type)."""


# -------------------------------------------------------------------------------------------------
# Caption files


def _pick(row: dict, keys: Sequence[str]):
    for key in keys:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return None


def _read_rows(captions_file: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row dict or None, problem or None) for each row of a JSONL or CSV file."""
    ext = os.path.splitext(captions_file)[1].lower()
    with open(captions_file, encoding="utf-8", newline="") as f:
        if ext in (".jsonl", ".json", ".ndjson"):
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, None, f"not valid JSON ({e.msg})"
                    continue
                if not isinstance(row, dict):
                    yield lineno, None, "not a JSON object"
                    continue
                yield lineno, row, None
        elif ext in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            if not reader.fieldnames or not (
                set(reader.fieldnames) & set(IMAGE_KEYS) and set(reader.fieldnames) & set(CAPTION_KEYS)
            ):
                raise DataError(
                    f"{captions_file}: the header must name an image column ({', '.join(IMAGE_KEYS)}) "
                    f"and a caption column ({', '.join(CAPTION_KEYS)}); got {reader.fieldnames}"
                )
            for row in reader:
                lineno = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    yield lineno, None, "wrong number of fields"
                    continue
                yield lineno, row, None
        else:
            raise DataError(f"{captions_file}: captions must be a .jsonl or .csv file")


def check_image(path: str) -> str | None:
    """None if ``path`` is an image PIL can open and verify, else why not."""
    try:
        with Image.open(path) as im:
            im.verify()
    except FileNotFoundError:
        return "image file not found"
    except Exception as e:  # PIL raises many types for broken files
        return f"unreadable image ({type(e).__name__}: {e})"
    return None


def load_image(path: str) -> Image.Image:
    """Decode an image fully (clip_core.image_inputs.decode_image: bombs refused first) as RGB."""
    return decode_image(path).convert("RGB")


class _Reporting:
    """What the datasets share: problems kept in ``problems`` and logged."""

    problems: list[str]

    def report(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)


class CaptionDataset(_Reporting):
    """(image, caption) pairs listed in a JSONL or CSV file, image paths relative to ``data_dir``.

    ``verify_images`` opens every image once (PIL's ``verify``, which reads headers and checks
    structure, not a full decode) so that broken files are reported up front; files that still fail
    to decode are reported by the loader. ``class_names`` are optional (for zero-shot evaluation,
    with a ``label`` field in the rows).
    """

    def __init__(
        self,
        data_dir: str,
        captions_file: str,
        verify_images: bool = True,
        class_names: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.captions_file = captions_file
        self.class_names = list(class_names)
        self.problems: list[str] = []
        self.paths: list[str] = []
        self.captions: list[str] = []
        self.labels: list[int] = []
        for lineno, row, problem in _read_rows(captions_file):
            where = f"{os.path.basename(captions_file)}:{lineno}"
            if problem is None:
                image, caption = _pick(row, IMAGE_KEYS), _pick(row, CAPTION_KEYS)
                if isinstance(caption, list):  # several captions for one image: the first one
                    caption = caption[0] if caption else None
                if image is None or not isinstance(image, str):
                    problem = "no image path"
                elif caption is None or not isinstance(caption, str) or not caption.strip():
                    problem = "no caption"
                else:
                    path = image if os.path.isabs(image) else os.path.join(data_dir, image)
                    if not os.path.isfile(path):
                        problem = f"image file not found: {image}"
                    elif verify_images:
                        problem = check_image(path)
                        problem = problem and f"{problem}: {image}"
            if problem is not None:
                self.report(f"{where}: {problem}; row skipped")
                continue
            self.paths.append(path)
            self.captions.append(caption.strip())
            label = row.get("label", -1)
            self.labels.append(
                int(label) if isinstance(label, (int, str)) and str(label).lstrip("-").isdigit() else -1
            )
        if not self.paths:
            raise DataError(f"{captions_file}: no usable rows ({len(self.problems)} skipped)")

    def __len__(self) -> int:
        return len(self.paths)

    def caption(self, i: int) -> str:
        return self.captions[i]

    def label(self, i: int) -> int:
        return self.labels[i]

    def load(self, i: int):
        return load_image(self.paths[i]), self.captions[i]

    def describe(self, i: int) -> str:
        return self.paths[i]

    def fingerprint(self) -> str:
        """sha256 of the usable rows (image path relative to data_dir, caption, label), in order: equal
        on hosts that can use the same rows, wherever data_dir is mounted."""
        digest = hashlib.sha256()
        for path, caption, label in zip(self.paths, self.captions, self.labels):
            rel = os.path.relpath(path, self.data_dir)
            digest.update(json.dumps([rel, caption, label]).encode() + b"\n")
        return digest.hexdigest()


# -------------------------------------------------------------------------------------------------
# Synthetic shapes


class SyntheticShapes(_Reporting):
    """``n`` images of one coloured shape each, captioned "a {colour} {shape}"; example i is drawn from
    ``seed`` and ``i`` alone, so any subset can be regenerated anywhere (every host, every resume).

    Position, size, background and a little colour jitter and noise vary per image; the class of an
    example is its (colour, shape) pair, ``len(COLOURS) * len(SHAPES)`` classes in all.
    """

    templates = ("a {} {}",)

    def __init__(self, n: int, image_size: int = 32, seed: int = 0) -> None:
        if n <= 0:
            raise DataError("a synthetic dataset needs at least one example")
        self.n, self.image_size, self.seed = int(n), int(image_size), int(seed)
        self.class_names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
        self.problems: list[str] = []
        labels = np.random.default_rng([self.seed, 0x5EED]).integers(0, len(self.class_names), self.n)
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return self.n

    def label(self, i: int) -> int:
        return self.labels[i]

    def caption(self, i: int) -> str:
        return f"a {self.class_names[self.labels[i]]}"

    def describe(self, i: int) -> str:
        return f"synthetic #{i}"

    def fingerprint(self) -> str:
        return hashlib.sha256(f"synthetic {self.n} {self.image_size} {self.seed}".encode()).hexdigest()

    def load(self, i: int):
        return self.draw(i), self.caption(i)

    def _layout(self, i: int):
        """(rng, background, fill, shape, box) of example i; the rng goes on to draw the noise."""
        colour_name, shape = self.class_names[self.labels[i]].split(" ")
        rng = np.random.default_rng([self.seed, i])
        s = self.image_size
        background = rng.integers(0, 90, 3) + rng.integers(0, 2) * 150  # dark or light
        colour = np.clip(np.array(COLOURS[colour_name]) + rng.integers(-25, 26, 3), 0, 255)
        size = rng.uniform(0.35, 0.7) * s
        cx, cy = rng.uniform(size / 2, s - size / 2, 2)
        return rng, tuple(int(v) for v in background), tuple(int(v) for v in colour), shape, (cx, cy, size)

    def draw(self, i: int) -> np.ndarray:
        rng, background, fill, shape, box = self._layout(i)
        s = self.image_size
        im = Image.new("RGB", (s, s), background)
        _draw_shape(ImageDraw.Draw(im), shape, box, fill)
        pixels = np.asarray(im, np.int16) + rng.integers(-12, 13, (s, s, 3))
        return np.clip(pixels, 0, 255).astype(np.uint8)

    def mask(self, i: int) -> np.ndarray:
        """(image_size, image_size) bool: the pixels example i's shape covers (as ``draw`` paints them)."""
        _, _, _, shape, box = self._layout(i)
        im = Image.new("L", (self.image_size,) * 2, 0)
        _draw_shape(ImageDraw.Draw(im), shape, box, 255)
        return np.asarray(im) > 0


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    cx, cy, size = box
    x0, y0, x1, y1 = cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # cross
        w = size / 6
        draw.rectangle((cx - w, y0, cx + w, y1), fill=fill)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=fill)


# -------------------------------------------------------------------------------------------------
# Splits, processing and batching


def train_eval_split(n: int, eval_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, eval) index arrays; the same for the same (n, fraction, seed)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n_eval = int(round(n * eval_fraction))
    order = np.random.default_rng([seed, 0xE7A1]).permutation(n)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def make_processor(config, image_size: int | None = None):
    """clip_core's CLIPProcessor (fast tokenizer with the bundled vocabulary) sized for ``config``."""
    from clip_core.image_processing import CLIPImageProcessor
    from clip_core.processing import CLIPProcessor

    try:
        from clip_core.tokenization_fast import CLIPTokenizerFast as Tokenizer

        tokenizer = Tokenizer()
    except ImportError:  # no `tokenizers` package: the pure-Python tokenizer gives the same ids
        from clip_core.tokenization import CLIPTokenizer as Tokenizer

        tokenizer = Tokenizer()
    size = image_size or config.vision_config.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tokenize(processor, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """Token ids padded to ``max_length``; a truncated text keeps <|endoftext|> last (open_clip's rule),
    so that the text tower pools at the end of text and never at a cut-off word."""
    out = processor.tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    ids = np.asarray(out["input_ids"], np.int32)
    mask = np.asarray(out["attention_mask"], np.int32)
    eos = processor.tokenizer.eos_token_id
    full = mask[:, -1] == 1
    ids[full, -1] = eos
    return {"input_ids": ids, "attention_mask": mask}


def process_images(processor, images: Sequence) -> np.ndarray:
    out = processor.image_processor(list(images), return_tensors="np", num_threads=1)
    return np.asarray(out["pixel_values"], np.float32)


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``indices``: a fixed function of (seed, epoch)."""
    return np.asarray(indices)[np.random.default_rng([seed, epoch]).permutation(len(indices))]


@dataclass
class BatchLoader:
    """Batches of a dataset in a deterministic per-epoch shuffled order, prefetched on a thread.

    ``batch_size`` is the global batch; ``process_index`` / ``process_count`` select this host's
    contiguous share of it. Iterate with ``iter_from(step)``; each item is ``(step, batch)``.
    """

    dataset: object
    indices: np.ndarray
    batch_size: int
    processor: object
    max_length: int
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    prefetch: int = 2

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, np.int64)
        if self.batch_size % self.process_count:
            raise ValueError(
                f"batch size {self.batch_size} is not divisible by {self.process_count} processes"
            )
        if len(self.indices) < self.batch_size:
            raise DataError(f"{len(self.indices)} examples are fewer than one batch of {self.batch_size}")
        self.bad: set[int] = set()
        self._lock = threading.Lock()

    @property
    def steps_per_epoch(self) -> int:
        return len(self.indices) // self.batch_size

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    def batch_indices(self, step: int) -> tuple[np.ndarray, int, int]:
        """(order of the epoch, start, end) of this host's share of global batch ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.indices, self.seed, epoch)
        start = k * self.batch_size + self.process_index * self.local_batch_size
        return order, start, start + self.local_batch_size

    def _load_one(self, idx: int):
        try:
            return self.dataset.load(int(idx))
        except Exception as e:
            with self._lock:
                if idx not in self.bad:
                    self.bad.add(idx)
                    self.dataset.report(
                        f"{self.dataset.describe(int(idx))}: cannot load ({type(e).__name__}: {e}); skipped"
                    )
            return None

    def load_batch(self, step: int) -> dict[str, np.ndarray]:
        """This host's share of global batch ``step`` as numpy arrays."""
        order, start, end = self.batch_indices(step)
        wanted = list(order[start:end])
        # Replacements for examples that fail: the examples after this global batch in the epoch's
        # order (then from its start) -- deterministic, as failures are. (Two hosts that both need a
        # replacement in the same step may pick the same one; a duplicate pair, never a bad one.)
        batch_start = start - self.process_index * self.local_batch_size
        batch_end = batch_start + self.batch_size
        spares = (int(i) for i in np.concatenate([order[batch_end:], order[:batch_start]]))
        images, captions, used = [], [], []
        for idx in wanted:
            item = None if idx in self.bad else self._load_one(idx)
            while item is None:
                idx = next(spares, None)
                if idx is None:
                    raise DataError("no loadable examples left to fill the batch")
                if idx in self.bad or idx in used or idx in wanted:
                    continue
                item = self._load_one(idx)
            image, caption = item
            images.append(image)
            captions.append(caption)
            used.append(int(idx))
        batch = tokenize(self.processor, captions, self.max_length)
        batch["pixel_values"] = process_images(self.processor, images)
        batch["index"] = np.asarray(used, np.int64)
        return batch

    def iter_from(
        self, step: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(step, batch) for step = start, start+1, ... (up to ``stop``), loaded ``prefetch`` ahead."""
        if self.prefetch <= 0:
            s = step
            while stop is None or s < stop:
                yield s, self.load_batch(s)
                s += 1
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        done = threading.Event()

        def work():
            s = step
            try:
                while not done.is_set() and (stop is None or s < stop):
                    item = (s, self.load_batch(s))
                    while not done.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    s += 1
                q.put(None)
            except BaseException as e:  # hand the error to the consumer
                q.put(e)

        thread = threading.Thread(target=work, daemon=True, name="clip-data-prefetch")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            done.set()


# -------------------------------------------------------------------------------------------------
# Webdataset shards, streamed

POSITION_FIELDS = ("epoch", "block", "shard", "sample", "emitted")


@dataclass
class StreamItem:
    """One usable sample of a stream: its image bytes and caption, and where it came from."""

    image: bytes
    caption: str
    where: str  # shard:key, for messages


def _usable(sample, report) -> StreamItem | None:
    from clip_core.shards import sample_caption, sample_image

    image, caption = sample_image(sample), sample_caption(sample)
    where = f"{sample.shard}:{sample.key}"
    if image is None or caption is None or not caption.strip():
        report(f"{where}: no {'image' if image is None else 'caption'}; sample skipped")
        return None
    return StreamItem(image[1], caption.strip(), where)


def iter_stream(
    shards: Sequence[str], seed: int, stream: int, block_size: int, position=None, report=None
) -> Iterator[tuple[StreamItem, tuple[int, ...]]]:
    """The samples of one stream forever, each with the stream's position after it.

    Epoch ``e`` reads ``shards`` in the order ``permutation(seed, stream, e)``, one shard after the
    other (one sample in memory at a time from the tar), in blocks of ``block_size`` usable samples;
    each block is emitted in the order ``permutation(seed, stream, e, block)`` (a shuffle buffer of
    ``block_size``). Samples without an image or a caption are reported and skipped.

    A position is (epoch, block, shard, sample, emitted): the block's first shard (in the epoch's
    order) and sample index, and how many of its samples were emitted. ``iter_stream(...,
    position=p)`` continues exactly after the sample whose position was ``p``: it re-reads that block
    from its first sample and skips the ones already emitted.
    """
    from clip_core.shards import iter_samples

    report = report or logger.warning
    position = (0, 0, 0, 0, 0) if position is None else position
    epoch, block, shard_pos, sample_index, skip = (int(v) for v in position)
    while True:
        order = np.random.default_rng([seed, stream, epoch]).permutation(len(shards))
        fresh = block == 0 and shard_pos == 0 and sample_index == 0 and skip == 0
        emitted_any = False
        reader = None
        while True:
            start = (shard_pos, sample_index)
            items: list[StreamItem] = []
            while len(items) < block_size and shard_pos < len(order):
                if reader is None:
                    reader = iter_samples(shards[order[shard_pos]], sample_index)
                sample = next(reader, None)
                if sample is None:
                    reader, shard_pos, sample_index = None, shard_pos + 1, 0
                    continue
                sample_index = sample.index + 1
                item = _usable(sample, report)
                if item is not None:
                    items.append(item)
            if not items:
                break  # end of the epoch
            order_in_block = np.random.default_rng([seed, stream, epoch, block]).permutation(len(items))
            for k in range(skip, len(items)):
                after = (epoch, block, *start, k + 1)
                if k + 1 == len(items):  # the block is done: the next one (or the next epoch) is next
                    end = shard_pos >= len(order)
                    after = (epoch + 1, 0, 0, 0, 0) if end else (epoch, block + 1, shard_pos, sample_index, 0)
                emitted_any = True
                yield items[order_in_block[k]], after
            block, skip = block + 1, 0
        if fresh and not emitted_any:  # a whole epoch without a usable sample: it would loop forever
            named = ", ".join(shards[:3]) + (f" and {len(shards) - 3} more" if len(shards) > 3 else "")
            raise DataError(f"no usable samples (image and caption) in {named}")
        epoch, block, shard_pos, sample_index, skip = epoch + 1, 0, 0, 0, 0


MAX_DECODE_FAILURES_IN_A_ROW = 1000  # undecodable samples replaced in a row before the loader gives up


def _decode(item: StreamItem, image_processor, out: np.ndarray) -> None:
    image_processor.preprocess_into(decode_image(item.image, item.where), out)


class ShardLoader:
    """Batches streamed from webdataset shards, each host reading only its own shards.

    The shards are dealt to ``num_streams`` streams (stream ``s`` reads shards ``s, s + S, ...``) and
    the streams to the hosts (host ``h`` of ``H`` runs streams ``h S/H`` to ``(h+1) S/H - 1``, each on
    its own reader thread). Every global batch takes ``batch_size / S`` samples from each stream, in
    stream order, so it holds the same examples in the same order whatever the number of hosts (any
    divisor of S). Images are decoded and preprocessed on a thread pool, ``prefetch`` batches ahead
    of the step. Memory holds about two shuffle blocks per stream plus the prefetched batches,
    whatever the size of the dataset.

    Each batch carries ``data_state``: this host's stream positions after it ([streams, 5] int64).
    ``iter_from(step, stop, state)`` continues exactly from such a state (all hosts' rows together,
    as a checkpoint stores them, or this host's). An image that fails to decode is reported and
    replaced by the next sample of its stream (deterministic, as failures are); a shard that cannot
    be read raises DataError naming it.
    """

    def __init__(
        self,
        shards: Sequence[str],
        batch_size: int,
        processor,
        max_length: int,
        seed: int = 0,
        num_streams: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        block_size: int = 256,
        threads: int | None = None,
        prefetch: int = 2,
    ) -> None:
        from clip_core.shards import split_shards

        self.shards = list(shards)
        self.num_streams = int(num_streams or min(len(self.shards), 2 * process_count))
        s, hosts = self.num_streams, process_count
        if s % hosts:
            raise DataError(f"{s} data streams cannot be split over {hosts} hosts: use a multiple of {hosts}")
        if len(self.shards) < s:
            raise DataError(f"{len(self.shards)} shards are fewer than the {s} data streams")
        if batch_size % s:
            raise DataError(f"batch size {batch_size} is not a multiple of the {s} data streams")
        self.batch_size, self.processor, self.max_length = batch_size, processor, max_length
        self.seed, self.block_size, self.prefetch = seed, max(1, int(block_size)), prefetch
        self.per_stream = batch_size // s
        first = process_index * (s // hosts)
        self.streams = list(range(first, first + s // hosts))
        self.stream_shards = {i: split_shards(self.shards, i, s) for i in self.streams}
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))
        self.problems: list[str] = []  # the first 1000 (all are counted in problem_count)
        self.problem_count = 0
        self._lock = threading.Lock()  # the reader threads report too
        self.local_batch_size = self.per_stream * len(self.streams)

    @property
    def local_shards(self) -> list[str]:
        return sorted(p for i in self.streams for p in self.stream_shards[i])

    def report(self, message: str) -> None:
        """Keep and log a problem: the first 20 in full, then a running count at 100, 1000, ..."""
        with self._lock:
            self.problem_count += 1
            n = self.problem_count
            if n <= 1000:
                self.problems.append(message)
        if n <= 20:
            logger.warning(message)
        elif str(n).rstrip("0") == "1":
            logger.warning("%d samples skipped or replaced so far; the latest: %s", n, message)

    def local_state(self, state=None) -> np.ndarray:
        """This host's rows of ``state`` (all streams' rows, or already this host's); zeros: the start."""
        if state is None:
            return np.zeros((len(self.streams), len(POSITION_FIELDS)), np.int64)
        state = np.asarray(state, np.int64).reshape(-1, len(POSITION_FIELDS))
        if len(state) == self.num_streams:
            return state[self.streams[0] : self.streams[-1] + 1].copy()
        if len(state) == len(self.streams):
            return state.copy()
        raise DataError(f"a data position of {len(state)} streams does not fit {self.num_streams} streams")

    def iter_from(self, step: int = 0, stop: int | None = None, state=None):
        """(step, batch) for step = step, step + 1, ... (up to ``stop``), continuing from ``state``."""
        positions = self.local_state(state)
        done = threading.Event()
        queues = [queue.Queue(maxsize=2 * self.per_stream + 2) for _ in self.streams]
        out: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))

        def put(q, item) -> bool:
            while not done.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read(j: int, stream: int) -> None:
            try:
                for pair in iter_stream(
                    self.stream_shards[stream], self.seed, stream, self.block_size, positions[j], self.report
                ):
                    if not put(queues[j], pair):
                        return
            except BaseException as e:  # handed to the batch thread, then to the consumer
                put(queues[j], e)

        def take(j: int):
            while True:
                try:
                    item = queues[j].get(timeout=0.1)
                    break
                except queue.Empty:
                    if done.is_set():
                        raise _Stopped() from None
            if isinstance(item, BaseException):
                raise item
            return item

        def assemble(pool, state: np.ndarray) -> dict:
            crop = self.processor.image_processor.crop_size
            pixels = np.empty((self.local_batch_size, 3, crop["height"], crop["width"]), np.float32)
            captions: list[str] = []
            pending = []
            for j in range(len(self.streams)):
                for _ in range(self.per_stream):
                    item, state[j] = take(j)
                    slot = len(captions)
                    captions.append(item.caption)
                    pending.append(
                        (
                            slot,
                            j,
                            item,
                            pool.submit(_decode, item, self.processor.image_processor, pixels[slot]),
                        )
                    )
            failed_in_a_row = 0
            for slot, j, item, future in pending:
                while future.exception() is not None:
                    error = future.exception()
                    self.report(
                        f"{item.where}: cannot decode the image ({type(error).__name__}: {error}); replaced"
                    )
                    failed_in_a_row += 1
                    if failed_in_a_row >= MAX_DECODE_FAILURES_IN_A_ROW:  # data without one good image
                        raise DataError(
                            f"{failed_in_a_row} images in a row could not be decoded, the last {item.where} "
                            f"({type(error).__name__}: {error}): stopping rather than searching forever"
                        )
                    item, state[j] = take(j)
                    captions[slot] = item.caption
                    future = pool.submit(_decode, item, self.processor.image_processor, pixels[slot])
                failed_in_a_row = 0
            batch = tokenize(self.processor, captions, self.max_length)
            batch["pixel_values"] = pixels
            batch["data_state"] = state.copy()
            return batch

        def work() -> None:
            from concurrent.futures import ThreadPoolExecutor

            state = positions.copy()
            try:
                with ThreadPoolExecutor(self.threads, thread_name_prefix="clip-shard-decode") as pool:
                    s = step
                    while stop is None or s < stop:
                        if not put(out, (s, assemble(pool, state))):
                            return
                        s += 1
                put(out, None)
            except _Stopped:
                return
            except BaseException as e:
                put(out, e)

        threads = [
            threading.Thread(target=read, args=(j, i), daemon=True, name=f"clip-shard-stream-{i}")
            for j, i in enumerate(self.streams)
        ]
        threads.append(threading.Thread(target=work, daemon=True, name="clip-shard-batches"))
        for t in threads:
            t.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, DataError):
                        raise item
                    raise DataError(f"{type(item).__name__}: {item}") from item
                yield item
        finally:
            done.set()

    def count_local_samples(self) -> int:
        """Samples in this host's shards, from the tar headers (read in parallel)."""
        from concurrent.futures import ThreadPoolExecutor

        from clip_core.shards import count_samples

        with ThreadPoolExecutor(self.threads) as pool:
            return sum(pool.map(count_samples, self.local_shards))


class _Stopped(Exception):
    """The consumer went away: the loader threads end quietly."""


class ShardSamples(_Reporting):
    """Every sample of a few shards in memory (an evaluation set), as an index-able dataset."""

    def __init__(self, shards: Sequence[str]) -> None:
        from clip_core.shards import iter_samples

        self.problems: list[str] = []
        self.class_names: list[str] = []
        self.items = [
            item
            for path in shards
            for sample in iter_samples(path)
            if (item := _usable(sample, self.report)) is not None
        ]
        if not self.items:
            raise DataError(f"no usable samples in the evaluation shards {list(shards)[:3]}")

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, i: int) -> str:
        return self.items[i].caption

    def label(self, i: int) -> int:
        return -1

    def describe(self, i: int) -> str:
        return self.items[i].where

    def load(self, i: int):
        item = self.items[i]
        return decode_image(item.image, item.where).convert("RGB"), item.caption


def encode_eval_set(dataset, indices: Sequence[int], processor, max_length: int, batch_size: int = 256):
    """Held-out examples as arrays (pixel_values, input_ids, attention_mask, labels, captions); unloadable
    ones are reported and left out."""
    pixels, captions, labels = [], [], []
    for start in range(0, len(indices), batch_size):
        images = []
        for idx in indices[start : start + batch_size]:
            try:
                image, caption = dataset.load(int(idx))
            except Exception as e:
                dataset.report(
                    f"{dataset.describe(int(idx))}: cannot load ({type(e).__name__}: {e}); skipped"
                )
                continue
            images.append(image)
            captions.append(caption)
            labels.append(dataset.label(int(idx)))
        if images:
            pixels.append(process_images(processor, images))
    text = tokenize(processor, captions, max_length)
    return {
        "pixel_values": np.concatenate(pixels) if pixels else np.zeros((0, 3, 1, 1), np.float32),
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "labels": np.asarray(labels, np.int64),
        "captions": captions,
    }


__all__ = [
    "BatchLoader",
    "CaptionDataset",
    "DataError",
    "ShardLoader",
    "ShardSamples",
    "SyntheticShapes",
    "encode_eval_set",
    "epoch_order",
    "iter_stream",
    "make_processor",
    "tokenize",
    "train_eval_split",
]
