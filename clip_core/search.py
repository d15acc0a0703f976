"""Searching a clip-embed folder: a faiss index over its image or text embeddings, and queries.

    build_index("emb/", kind="image")            # clip-index emb/
    Index.load("emb/").search(text="a red bicycle", k=10)   # clip-search emb/ --text "a red bicycle"

Embeddings are L2-normalised, so the inner product is the cosine similarity. Up to ``exact_limit``
rows the index is exact (``IndexFlatIP``); beyond it an inverted-file index (``IndexIVFFlat``,
about 4 sqrt(n) lists, trained on a sample) or, on request, a graph index (``IndexHNSWFlat``).
Recall@k is measured on held-out rows: ``recall_queries`` rows, left out of the quantizer's
training sample, are searched with the approximate index and with an exact one; the share of the
exact k nearest neighbours (the query row itself excluded) that the approximate search also returns
is the recall. ``nprobe`` (IVF) or ``efSearch`` (HNSW) is raised until it reaches
``target_recall``, and both are saved with the index (``DIR/index/{kind}.faiss`` and
``{kind}.json``, written atomically).

``Index.load`` reads the saved index, or makes an exact one in memory when there is none; queries
(texts, image files or PIL images) are encoded with the model, backend and dtype that made the
embeddings (from manifest.json), and each hit carries its score and its row's metadata.
faiss comes with the ``[search]`` extra, pyarrow with ``[embed]``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .embedding import EmbedError, load_embeddings, read_manifest, require, shard_files
from .files import atomic_path, atomic_write_text
from .image_inputs import decode_image

EXACT_LIMIT = 100_000
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")


def _faiss():
    return require("faiss", "search", "a search index")


def _index_paths(out: str, kind: str) -> tuple[str, str]:
    folder = os.path.join(out, "index")
    return os.path.join(folder, f"{kind}.faiss"), os.path.join(folder, f"{kind}.json")


def default_kind(manifest: dict) -> str:
    return "image" if manifest.get("has_images") else "text"


@dataclass
class IndexReport:
    kind: str
    index_type: str
    rows: int
    dim: int
    recall: float
    k: int
    queries: int
    params: dict
    path: str | None

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        where = f" -> {self.path}" if self.path else ""
        return (
            f"{self.kind} index: {self.index_type} over {self.rows} rows of {self.dim} dims"
            f"{' (' + params + ')' if params else ''}; recall@{self.k} on {self.queries} held-out rows: "
            f"{self.recall:.4f}{where}"
        )


def recall_at_k(found: np.ndarray, truth: np.ndarray, query_rows: np.ndarray, k: int) -> float:
    """Share of each query's exact k nearest rows (itself excluded) that the approximate search found.

    ``found`` and ``truth``: (queries, >= k + 1) row ids from the approximate and the exact search."""
    hits = total = 0
    for row, true_ids, found_ids in zip(query_rows, truth, found):
        true_set = [i for i in true_ids if i != row and i >= 0][:k]
        found_set = {i for i in found_ids if i != row and i >= 0}
        hits += sum(i in found_set for i in true_set)
        total += len(true_set)
    return hits / total if total else 1.0


def build_index(
    out: str | os.PathLike,
    kind: str | None = None,
    index_type: str = "auto",
    exact_limit: int = EXACT_LIMIT,
    recall_queries: int = 1000,
    k: int = 10,
    target_recall: float = 0.95,
    nlist: int | None = None,
    hnsw_m: int = 32,
    seed: int = 0,
    save: bool = True,
):
    """Build, measure and (with ``save``) write the faiss index of a clip-embed folder's ``kind``
    ("image" or "text"; default: image when the folder has image embeddings). Returns
    ``(faiss index, IndexReport)``."""
    faiss = _faiss()
    out = os.fspath(out)
    manifest = read_manifest(out)
    kind = kind or default_kind(manifest)
    if kind not in ("image", "text"):
        raise EmbedError(f"--kind {kind!r}: choose image or text")
    if index_type not in INDEX_TYPES:
        raise EmbedError(f"--index-type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    vectors, _ = load_embeddings(out, kind)
    rows, dim = vectors.shape
    if index_type == "auto":
        index_type = "flat" if rows <= exact_limit else "ivf"

    rng = np.random.default_rng(seed)
    held_out = np.sort(rng.choice(rows, size=min(recall_queries, rows), replace=False))
    queries = vectors[held_out]
    k = max(1, k)
    # exact neighbours of the held-out rows, by brute force (no second copy of the vectors)
    _, truth = faiss.knn(queries, vectors, min(k + 1, rows), faiss.METRIC_INNER_PRODUCT)
    params: dict = {}
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    elif index_type == "ivf":
        lists = nlist or max(1, min(int(4 * math.sqrt(rows)), rows // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        training = np.setdiff1d(np.arange(rows), held_out)
        if len(training) < lists:
            training = np.arange(rows)
        sample = rng.choice(training, size=min(len(training), 256 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        params["nlist"] = lists
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors)
        params["M"] = hnsw_m

    recall = _tune(index, index_type, truth, queries, held_out, k, target_recall, params)
    report = IndexReport(kind, index_type, rows, dim, recall, k, len(held_out), params, None)
    if save:
        index_path, info_path = _index_paths(out, kind)
        os.makedirs(os.path.dirname(index_path), exist_ok=True)
        with atomic_path(index_path) as tmp:
            faiss.write_index(index, tmp)
        info = {"kind": kind, "index_type": index_type, "rows": rows, "dim": dim, "recall": recall, "k": k}
        info.update(queries=len(held_out), params=params, target_recall=target_recall)
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
        report.path = index_path
    return index, report


def _tune(index, index_type, truth, queries, rows, k, target, params) -> float:
    """Raise the search breadth (nprobe / efSearch) by doubling until recall reaches ``target``."""

    def recall() -> float:
        return recall_at_k(index.search(queries, truth.shape[1])[1], truth, rows, k)

    if index_type == "flat":
        return recall()
    if index_type == "ivf":
        setting, limit, value = "nprobe", index.nlist, 1
    else:
        setting, limit, value = "efSearch", 4096, max(16, k + 1)
    while True:
        if index_type == "ivf":
            index.nprobe = value
        else:
            index.hnsw.efSearch = value
        measured = recall()
        if measured >= target or value >= limit:
            params[setting] = value
            return measured
        value = min(limit, value * 2)


# --------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    score: float
    row: int  # row over the whole folder, shards in order
    shard: int
    shard_row: int
    metadata: dict

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "row": self.row,
            "shard": self.shard,
            "shard_row": self.shard_row,
            **self.metadata,
        }


class Index:
    """The searchable embeddings of a clip-embed folder: ``Index.load(DIR).search(text="...", k=10)``."""

    def __init__(self, out: str, kind: str, index, manifest: dict, counts: list[int], info: dict | None):
        self.out, self.kind, self.index, self.manifest, self.info = out, kind, index, manifest, info
        self.shard_numbers = [int(n) for n in manifest["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._metadata: dict[int, dict[str, list]] = {}
        self._encoder = None
        self._preprocessing = None
        self.backend = manifest["settings"].get("backend", "torch")

    @classmethod
    def load(
        cls, out: str | os.PathLike, kind: str | None = None, encoder=None, backend: str | None = None
    ) -> Index:
        """The saved index of ``kind`` (image by default when there are image embeddings), or an exact
        one made now. ``encoder`` encodes queries; by default the folder's model and dtype on
        ``backend`` (default: the folder's backend; the backends agree to 1e-5)."""
        faiss = _faiss()
        out = os.fspath(out)
        manifest = read_manifest(out)
        kind = kind or default_kind(manifest)
        counts = [manifest["shards"][n]["rows"] for n in manifest["shards"]]
        index_path, info_path = _index_paths(out, kind)
        info = None
        if os.path.exists(index_path):
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
            index = faiss.read_index(index_path)
            if index.ntotal != sum(counts):
                raise EmbedError(
                    f"{index_path} holds {index.ntotal} rows but {out} has {sum(counts)}: rebuild it with clip-index"
                )
            params = info.get("params", {})
            if "nprobe" in params:
                index.nprobe = params["nprobe"]
            if "efSearch" in params:
                index.hnsw.efSearch = params["efSearch"]
        else:
            vectors, counts = load_embeddings(out, kind)
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
        result = cls(out, kind, index, manifest, counts, info)
        result._encoder, result.backend = encoder, backend or result.backend
        return result

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- query encoding ----------------------------------------------------------------------------

    @property
    def encoder(self):
        if self._encoder is None:
            from .encoder import load_encoder

            settings = self.manifest["settings"]
            if settings["model"].startswith("<"):
                raise EmbedError(
                    f"{self.out} was made with an in-memory encoder: pass encoder= to Index.load to encode queries"
                )
            self._encoder = load_encoder(settings["model"], self.backend, settings["dtype"])
        return self._encoder

    def _preprocess(self):
        if self._preprocessing is None:
            from .embedding import load_preprocessing

            model = self.manifest["settings"]["model"]
            self._preprocessing = load_preprocessing(
                None if model.startswith("<") else model, self.encoder.config
            )
        return self._preprocessing

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from .embedding import UnitEncoder

        image_processor, tokenizer = self._preprocess()
        unit_encoder = UnitEncoder(self.encoder, image_processor, tokenizer, with_images=False)
        return unit_encoder.encode_captions(list(texts))

    def encode_images(self, images: Sequence) -> np.ndarray:
        """Image files (paths) or PIL images, preprocessed as the embeddings were."""
        image_processor, _ = self._preprocess()
        opened = []
        for image in images:
            if isinstance(image, (str, os.PathLike)):
                try:
                    image = decode_image(image)
                except Exception as e:  # PIL raises many types for unreadable files
                    raise EmbedError(
                        f"--image {os.fspath(image)!r}: cannot read it ({type(e).__name__}: {e})"
                    ) from None
            opened.append(image)
        pixels = image_processor(opened, return_tensors="np")["pixel_values"]
        return self.encoder.encode_images(pixels)

    # -- search ------------------------------------------------------------------------------------

    def search(self, text=None, image=None, vector=None, k: int = 10):
        """The ``k`` best rows for one query (a list of Hit) or for each of several (a list of lists).

        Give exactly one of ``text`` (a string or strings), ``image`` (a path or PIL image, or a list)
        or ``vector`` (an embedding, or a 2-D array of them)."""
        given = [q is not None for q in (text, image, vector)]
        if sum(given) != 1:
            raise ValueError("give exactly one of text, image or vector")
        if text is not None:
            single = isinstance(text, str)
            vectors = self.encode_texts([text] if single else list(text))
        elif image is not None:
            single = not isinstance(image, (list, tuple))
            vectors = self.encode_images([image] if single else list(image))
        else:
            vectors = np.asarray(vector, np.float32)
            single = vectors.ndim == 1
            vectors = np.atleast_2d(vectors)
        if not np.isfinite(vectors).all():
            raise ValueError("a query's embedding is not finite (the model maps it to a zero vector)")
        if vectors.shape[1] != self.index.d:
            raise ValueError(f"query vectors have {vectors.shape[1]} dims, the index {self.index.d}")
        scores, rows = self.index.search(np.ascontiguousarray(vectors, np.float32), min(k, len(self)))
        hits = [
            [self._hit(float(s), int(r)) for s, r in zip(score_row, id_row) if r >= 0]
            for score_row, id_row in zip(scores, rows)
        ]
        return hits[0] if single else hits

    def _hit(self, score: float, row: int) -> Hit:
        position = int(np.searchsorted(self.offsets, row, side="right")) - 1
        shard = self.shard_numbers[position]
        shard_row = row - int(self.offsets[position])
        columns = self._shard_metadata(shard)
        return Hit(
            score, row, shard, shard_row, {name: values[shard_row] for name, values in columns.items()}
        )

    def _shard_metadata(self, shard: int) -> dict[str, list]:
        if shard not in self._metadata:
            parquet = require("pyarrow.parquet", "embed", "reading metadata")
            self._metadata[shard] = parquet.read_table(shard_files(self.out, shard)["metadata"]).to_pydict()
        return self._metadata[shard]


__all__ = ["EXACT_LIMIT", "Hit", "Index", "IndexReport", "build_index", "recall_at_k"]
