"""The clip-eval jobs: zero-shot classification and retrieval of a labelled / captioned image set.

Inputs, read strictly (an evaluation over part of a set silently would be a wrong number; a bad row
is a ValueError naming the file and line):

- labels (zero-shot): a CSV with a header naming an image column (``image``, ``image_path``,
  ``file_name``, ``filename``, ``file``, ``path``) and a label column (``label``, ``class``,
  ``category``), or a JSONL of such objects; or no file at all, for a folder of one sub-folder per
  class (``images/cat/1.jpg``). Image paths are relative to the images folder. Class names are the
  sorted labels, or the lines of ``--classes`` (then labels may also be indices into it).
- captions (retrieval): the same CSV / JSONL with a caption column (``caption``, ``text``,
  ``title``), or JSONL with a ``captions`` list; the rows of one image (same path) are its captions.
- ``--embeddings DIR``: a clip-embed output folder in clip-retrieval's layout
  (``img_emb/img_emb_N.npy``, ``text_emb/text_emb_N.npy``, ``metadata/metadata_N.parquet``), read by
  ``read_embedding_folder``; image and text row i are one (image, caption) pair, and rows whose
  metadata name the same image are one image with several captions.

Results are CLIP_benchmark's JSON (``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``,
``language``) plus ``backend`` and the counts; ``result_table`` formats them for the terminal.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from clip_core.encoding import encode_images, encode_texts
from clip_core.shards import IMAGE_SUFFIXES

IMAGE_KEYS = ("image", "image_path", "file_name", "filename", "file", "path", "filepath")
LABEL_KEYS = ("label", "class", "category")
CAPTION_KEYS = ("caption", "text", "title")
# metadata columns that identify an image in a clip-embed folder, in order of preference
METADATA_IMAGE_KEYS = ("image_path", "image", "path", "filepath", "file_name", "filename", "url", "key")


# ---------------------------------------------------------------------------------------------
# Label and caption files


def _rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV (with header) or JSONL file; a malformed row is a ValueError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith((".jsonl", ".json")):
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object per line")
                rows.append((number, row))
        elif path.endswith((".csv", ".tsv")):
            reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
            rows = [(number, row) for number, row in enumerate(reader, start=2)]
        else:
            raise ValueError(f"{path}: expected a .csv, .tsv or .jsonl file")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _field(row: dict, keys: Sequence[str], what: str, where: str):
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    raise ValueError(f"{where}: no {what} (a column named one of {', '.join(keys)})")


def _image_path(value, images_dir: str | None, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: the image must be a path, got {value!r}")
    path = value if os.path.isabs(value) or images_dir is None else os.path.join(images_dir, value)
    if not os.path.isfile(path):
        raise ValueError(f"{where}: image file {path} does not exist")
    return path


def read_classes(path: str) -> list[str]:
    """Class names, one per line (blank lines and '#' comments skipped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classes file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"{path}: no class names")
    return names


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively), sorted."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"images folder {folder} does not exist")
    found = [
        p
        for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
        if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p)
    ]
    return sorted(found)


@dataclasses.dataclass
class LabelledImages:
    paths: list[str]
    labels: np.ndarray  # (N,) class indices
    class_names: list[str]


def read_labels(
    images_dir: str, labels_file: str | None = None, classes: Sequence[str] | None = None
) -> LabelledImages:
    """Labelled images from a labels file, or from a class-per-sub-folder layout when there is none."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images folder {images_dir} does not exist")
    pairs: list[tuple[str, str, str]] = []  # (path, label, where)
    if labels_file is None:
        for path in list_images(images_dir):
            parent = os.path.relpath(os.path.dirname(path), images_dir)
            if parent == os.curdir:
                raise ValueError(
                    f"{path}: without --labels every image must sit in a sub-folder named after its class"
                )
            pairs.append((path, parent.split(os.sep)[0], path))
        if not pairs:
            raise ValueError(f"no images under {images_dir}")
    else:
        for number, row in _rows(labels_file):
            where = f"{labels_file}:{number}"
            path = _image_path(_field(row, IMAGE_KEYS, "image", where), images_dir, where)
            label = _field(row, LABEL_KEYS, "label", where)
            pairs.append((path, str(label).strip(), where))
    names = list(classes) if classes is not None else sorted({label for _, label, _ in pairs})
    index = {name: i for i, name in enumerate(names)}
    labels = []
    for _, label, where in pairs:
        if label in index:
            labels.append(index[label])
        elif classes is not None and re.fullmatch(r"\d+", label) and int(label) < len(names):
            labels.append(int(label))
        else:
            raise ValueError(f"{where}: label {label!r} is not one of the {len(names)} classes")
    return LabelledImages([p for p, _, _ in pairs], np.asarray(labels, np.int64), names)


@dataclasses.dataclass
class CaptionedImages:
    paths: list[str]  # distinct images, in order of first appearance
    captions: list[str]
    text_to_image: np.ndarray  # (N_texts,) index into paths


def read_captions(images_dir: str | None, captions_file: str) -> CaptionedImages:
    """Images and their captions; rows naming the same image add captions to it."""
    paths: list[str] = []
    where_image: dict[str, int] = {}
    captions, owners = [], []
    for number, row in _rows(captions_file):
        where = f"{captions_file}:{number}"
        path = _image_path(_field(row, IMAGE_KEYS, "image", where), images_dir, where)
        texts = row.get("captions")
        if texts is None:
            texts = [_field(row, CAPTION_KEYS, "caption", where)]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise ValueError(f"{where}: captions must be non-empty strings")
        key = os.path.normpath(os.path.abspath(path))
        if key not in where_image:
            where_image[key] = len(paths)
            paths.append(path)
        captions.extend(t.strip() for t in texts)
        owners.extend([where_image[key]] * len(texts))
    return CaptionedImages(paths, captions, np.asarray(owners, np.int64))


# ---------------------------------------------------------------------------------------------
# clip-embed output folders


@dataclasses.dataclass
class EmbeddingFolder:
    image_embeds: np.ndarray | None  # (N, D) float32, or None when the folder has no img_emb
    text_embeds: np.ndarray | None
    metadata: list[dict] | None  # one dict per row, or None without metadata files

    def image_keys(self) -> list[str] | None:
        """Each row's image identifier from the metadata (the first column of METADATA_IMAGE_KEYS present)."""
        if not self.metadata:
            return None
        for key in METADATA_IMAGE_KEYS:
            if all(row.get(key) not in (None, "") for row in self.metadata):
                return [str(row[key]) for row in self.metadata]
        return None


def _numbered(folder: str, prefix: str, suffix: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(prefix)}_?(\d+){re.escape(suffix)}$")
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


def _read_parquet(path: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    return pq.read_table(path).to_pylist()


def _clip_embed_shards(folder: str) -> list[int] | None:
    """The shard numbers a clip-embed folder's manifest.json lists as finished (None for a folder
    without one, e.g. clip-retrieval's). A run that has not finished is refused: its folder may hold
    the files of a shard being written when it stopped, and misses the shards after it."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        return None
    from clip_core.embedding import FORMAT

    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    if not manifest.get("complete"):
        raise ValueError(
            f"{folder}: the clip-embed run that writes it has not finished "
            f"({len(manifest.get('shards', {}))} shards so far); rerun clip-embed with the same --out to finish it"
        )
    return sorted(int(n) for n in manifest.get("shards", {}))


def read_embedding_folder(folder: str) -> EmbeddingFolder:
    """A clip-embed / clip-retrieval output folder: the .npy parts of each kind concatenated in part
    order (``img_emb_0.npy``, ``img_emb_1.npy``, ...), and the metadata rows when present.

    Tolerant of what is missing (no text embeddings, no metadata), strict about what is there: the
    parts of each kind must have matching row counts, and embeddings must be 2-D and finite. A
    clip-embed folder (its manifest.json) is read as the manifest lists it: only finished runs, only
    the shards it names (float16 embeddings are widened to float32).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"embeddings folder {folder} does not exist")
    shards = _clip_embed_shards(folder)

    def parts_of(kind: str, prefix: str, suffix: str) -> list[str]:
        if shards is None:
            return _numbered(os.path.join(folder, kind), prefix, suffix)
        paths = [os.path.join(folder, kind, f"{prefix}_{n}{suffix}") for n in shards]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing and len(missing) < len(paths):
            raise ValueError(f"{folder}: manifest.json lists shard files that are missing ({missing[0]})")
        return [] if missing else paths

    def load(kind: str, prefix: str) -> tuple[np.ndarray | None, list[int]]:
        parts = parts_of(kind, prefix, ".npy")
        if not parts:
            return None, []
        arrays = []
        for path in parts:
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read {path}: {e}") from None
            if array.ndim != 2:
                raise ValueError(f"{path}: expected a 2-D array (rows, dim), got shape {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{path}: holds NaN or infinite values")
            arrays.append(array.astype(np.float32, copy=False))
        if len({a.shape[1] for a in arrays}) > 1:
            raise ValueError(
                f"{folder}/{kind}: parts of different widths {sorted({a.shape[1] for a in arrays})}"
            )
        return np.concatenate(arrays), [len(a) for a in arrays]

    images, image_parts = load("img_emb", "img_emb")
    texts, text_parts = load("text_emb", "text_emb")
    if images is None and texts is None:
        raise ValueError(f"{folder}: no img_emb/img_emb_N.npy nor text_emb/text_emb_N.npy files")
    if images is not None and texts is not None and image_parts != text_parts:
        raise ValueError(f"{folder}: img_emb parts have {image_parts} rows but text_emb parts {text_parts}")
    metadata = None
    meta_parts = parts_of("metadata", "metadata", ".parquet")
    if meta_parts:
        metadata = [row for path in meta_parts for row in _read_parquet(path)]
        rows = len(images) if images is not None else len(texts)
        if len(metadata) != rows:
            raise ValueError(f"{folder}: {len(metadata)} metadata rows for {rows} embeddings")
    return EmbeddingFolder(images, texts, metadata)


def group_pairs(keys: Sequence[str] | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct image, text_to_image) for ``rows`` (image, caption) pairs whose
    images are named by ``keys`` (None: every row its own image)."""
    if keys is None:
        return np.arange(rows), np.arange(rows)
    index: dict[str, int] = {}
    firsts, owners = [], []
    for row, key in enumerate(keys):
        if key not in index:
            index[key] = len(firsts)
            firsts.append(row)
        owners.append(index[key])
    return np.asarray(firsts, np.int64), np.asarray(owners, np.int64)


def _check_width(embeds: np.ndarray, encoder, where: str) -> None:
    width = int(encoder.config.projection_dim)
    if embeds.shape[1] != width:
        raise ValueError(f"{where}: embeddings of width {embeds.shape[1]}, the model projects to {width}")


# ---------------------------------------------------------------------------------------------
# The jobs


def benchmark_result(task: str, dataset: str, model: str, metrics: dict, **extra) -> dict:
    """CLIP_benchmark's result object (its keys first), with our extra fields after them."""
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": model,
        "task": task,
        "metrics": metrics,
        "language": "en",
        **extra,
    }


def zeroshot_job(
    model: str,
    images_dir: str,
    labels_file: str | None = None,
    classes_file: str | None = None,
    templates: str | Sequence[str] | None = None,
    backend: str = "torch",
    dtype: str | None = None,
    embeddings: str | None = None,
    batch_size: int = 64,
    ks: Sequence[int] = (1, 5),
    progress: bool = False,
    encoder=None,
    processor=None,
    dataset: str | None = None,
) -> tuple[dict, dict]:
    """Zero-shot classification of a labelled image set: (result JSON, details for plots).

    ``embeddings``: a clip-embed folder whose image embeddings are reused (matched to the labelled
    images by the metadata's image column, else row i = labelled image i).
    """
    from clip_core.encoder import load_encoder
    from clip_core.metrics import zeroshot_metrics
    from clip_core.processing import CLIPProcessor
    from clip_core.zeroshot import ZeroShotClassifier

    classes = read_classes(classes_file) if classes_file else None
    data = read_labels(images_dir, labels_file, classes)
    processor = processor or CLIPProcessor.from_pretrained(model)
    encoder = encoder or load_encoder(model, backend, dtype)
    clf = ZeroShotClassifier(
        encoder,
        data.class_names,
        templates,
        processor.tokenizer,
        processor.image_processor,
        progress=progress,
    )
    if embeddings:
        image_embeds = _image_rows_for(read_embedding_folder(embeddings), data.paths, images_dir, embeddings)
        _check_width(image_embeds, encoder, embeddings)
    else:
        image_embeds = encode_images(encoder, processor.image_processor, data.paths, batch_size, progress)
    scores = image_embeds @ clf.weights.T
    ks = tuple(k for k in ks if k <= len(data.class_names)) or (1,)
    metrics = zeroshot_metrics(scores, data.labels, ks)
    result = benchmark_result(
        "zeroshot_classification",
        dataset or os.path.basename(os.path.normpath(images_dir)),
        str(model),
        metrics,
        backend=backend,
        num_images=len(data.paths),
        num_classes=len(data.class_names),
        num_templates=len(clf.templates),
    )
    return result, {
        "paths": data.paths,
        "labels": data.labels,
        "classifier": clf,
        "image_embeds": image_embeds,
    }


def _image_rows_for(folder: EmbeddingFolder, paths: Sequence[str], images_dir: str, where: str) -> np.ndarray:
    if folder.image_embeds is None:
        raise ValueError(f"{where}: no image embeddings (img_emb/img_emb_N.npy)")
    keys = folder.image_keys()
    if keys is None:
        if len(folder.image_embeds) != len(paths):
            raise ValueError(
                f"{where}: {len(folder.image_embeds)} image embeddings and no metadata naming them, "
                f"for {len(paths)} labelled images"
            )
        return folder.image_embeds
    # match by path relative to the images folder, by absolute path, or by file name
    lookup: dict[str, int] = {}
    for row, key in enumerate(keys):
        for form in (key, os.path.normpath(key), os.path.basename(key)):
            lookup.setdefault(form, row)
    rows = []
    for path in paths:
        rel = os.path.relpath(path, images_dir)
        for form in (rel, os.path.normpath(path), os.path.abspath(path), os.path.basename(path)):
            if form in lookup:
                rows.append(lookup[form])
                break
        else:
            raise ValueError(f"{where}: no embedding for image {rel}")
    return folder.image_embeds[rows]


def retrieval_job(
    model: str,
    images_dir: str | None = None,
    captions_file: str | None = None,
    backend: str = "torch",
    dtype: str | None = None,
    embeddings: str | None = None,
    batch_size: int = 64,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = False,
    encoder=None,
    processor=None,
    dataset: str | None = None,
) -> tuple[dict, dict]:
    """Image-text retrieval of a captioned image set: (result JSON, details for plots).

    With ``embeddings`` the clip-embed folder is the whole evaluation (no model is run): image and
    text row i are a pair, rows whose metadata name the same image are one image.
    """
    from clip_core.metrics import retrieval_metrics

    if embeddings:
        folder = read_embedding_folder(embeddings)
        if folder.image_embeds is None or folder.text_embeds is None:
            raise ValueError(f"{embeddings}: retrieval needs both img_emb and text_emb files")
        keys = folder.image_keys()
        firsts, owners = group_pairs(keys, len(folder.image_embeds))
        image_embeds, text_embeds = folder.image_embeds[firsts], folder.text_embeds
        captions = [str(row.get("caption", "")) for row in folder.metadata] if folder.metadata else None
        paths = [keys[i] for i in firsts] if keys else None
        name = dataset or os.path.basename(os.path.normpath(embeddings))
    else:
        if captions_file is None:
            raise ValueError("retrieval needs a captions file (or an embeddings folder)")
        from clip_core.encoder import load_encoder
        from clip_core.processing import CLIPProcessor

        data = read_captions(images_dir, captions_file)
        processor = processor or CLIPProcessor.from_pretrained(model)
        encoder = encoder or load_encoder(model, backend, dtype)
        image_embeds = encode_images(encoder, processor.image_processor, data.paths, batch_size, progress)
        text_embeds = encode_texts(
            encoder, processor.tokenizer, data.captions, batch_size=256, progress=progress
        )
        owners, captions, paths = data.text_to_image, data.captions, data.paths
        name = dataset or os.path.splitext(os.path.basename(captions_file))[0]
    metrics = retrieval_metrics(image_embeds, text_embeds, owners, ks)
    result = benchmark_result(
        "zeroshot_retrieval",
        name,
        str(model),
        metrics,
        backend=None if embeddings else backend,
        num_images=len(image_embeds),
        num_texts=len(text_embeds),
    )
    details = {
        "paths": paths,
        "captions": captions,
        "text_to_image": owners,
        "image_embeds": image_embeds,
        "text_embeds": text_embeds,
    }
    return result, details


def result_table(result: dict) -> str:
    """The metrics as an aligned two-column table, with a header line naming the run."""
    counts = ", ".join(f"{v} {k[4:]}" for k, v in result.items() if k.startswith("num_"))
    backend = f" ({result['backend']})" if result.get("backend") else ""
    lines = [f"{result['task']} of {result['dataset']} with {result['model']}{backend}: {counts}"]
    width = max(len(k) for k in result["metrics"])
    lines.append(f"{'metric'.ljust(width)}  value")
    lines.append("-" * (width + 9))
    for key, value in result["metrics"].items():
        lines.append(f"{key.ljust(width)}  {value:.4f}")
    return "\n".join(lines)


__all__ = [
    "CaptionedImages",
    "EmbeddingFolder",
    "LabelledImages",
    "benchmark_result",
    "group_pairs",
    "list_images",
    "read_captions",
    "read_classes",
    "read_embedding_folder",
    "read_labels",
    "result_table",
    "retrieval_job",
    "zeroshot_job",
]
