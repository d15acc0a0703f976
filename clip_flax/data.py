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

``BatchLoader`` turns a dataset and a list of example indices into batches of numpy arrays
(``input_ids``, ``attention_mask``, ``pixel_values``) through the processor. The order is a pure
function of ``(seed, step)``: epoch ``e`` visits the indices in ``permutation(seed, e)``, batch ``k``
of the epoch takes the next ``batch_size`` of them. So a run resumed at step ``s`` sees exactly the
batches an uninterrupted run sees, with no loader state to save. An image that fails to decode at
load time is reported, remembered and replaced by the next loadable example of the epoch's order
(deterministic, because the failure is). Each process of a multi-host run loads only its own
contiguous share of every global batch.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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
    """Decode an image fully (so that truncated files fail here, not later) as RGB."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


class CaptionDataset:
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

    def report(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)

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


# -------------------------------------------------------------------------------------------------
# Synthetic shapes


class SyntheticShapes:
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

    def report(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)

    def load(self, i: int):
        return self.draw(i), self.caption(i)

    def draw(self, i: int) -> np.ndarray:
        colour_name, shape = self.class_names[self.labels[i]].split(" ")
        rng = np.random.default_rng([self.seed, i])
        s = self.image_size
        background = rng.integers(0, 90, 3) + rng.integers(0, 2) * 150  # dark or light
        im = Image.new("RGB", (s, s), tuple(int(v) for v in background))
        colour = np.clip(np.array(COLOURS[colour_name]) + rng.integers(-25, 26, 3), 0, 255)
        fill = tuple(int(v) for v in colour)
        size = rng.uniform(0.35, 0.7) * s
        cx, cy = rng.uniform(size / 2, s - size / 2, 2)
        x0, y0, x1, y1 = cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2
        draw = ImageDraw.Draw(im)
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
        pixels = np.asarray(im, np.int16) + rng.integers(-12, 13, (s, s, 3))
        return np.clip(pixels, 0, 255).astype(np.uint8)


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
    "SyntheticShapes",
    "encode_eval_set",
    "epoch_order",
    "make_processor",
    "tokenize",
    "train_eval_split",
]
