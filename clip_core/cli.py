"""clip_core's console scripts: argument parsing and messages only, the work is library code.

    clip-convert SRC DST [--to safetensors|pt|tf|flax|all] [--dtype fp32|bf16|fp16] [--overwrite]
                 [--config CONFIG] [--hidden-act quick_gelu|gelu] [--progress | --no-progress]
    clip-embed MODEL --out DIR [--images FOLDER|GLOB|SHARDS] [--texts FILE] [--backend torch|tf|flax]
               [--dtype fp32|bf16|fp16] [--batch-size N] [--num-workers N] [--shard-size N]
               [--engine local|ray] [--num-actors N] [--ray-address ADDR] [--quiet]
    clip-index DIR [--kind image|text|both] [--index-type auto|flat|ivf|hnsw] [-k 10]
    clip-search DIR (--text TEXT | --image PATH) [-k 10] [--kind image|text] [--json]

``convert_main`` is ``clip-convert`` (``clip_core.conversion.convert``); ``embed_main``,
``index_main`` and ``search_main`` are ``clip-embed`` (``clip_core.embedding.embed``),
``clip-index`` (``clip_core.search.build_index``) and ``clip-search`` (``clip_core.search.Index``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from clip_core.config import ConfigError
from clip_core.conversion import convert
from clip_core.names import CheckpointError

CONVERT_DESCRIPTION = """clip-convert: turn any CLIP checkpoint we can read into a complete transformers folder.

SRC is a transformers folder (model.safetensors, pytorch_model.bin, tf_model.h5 or
flax_model.msgpack, sharded or not), a single weights file (its config from --config, from a
config.json beside it, or inferred from the shapes), OpenAI's original CLIP state dict of a ViT
model, or an open_clip state dict of an OpenAI-architecture model. DST becomes a folder with
config.json, the weights, the tokenizer files and preprocessor_config.json. Tensors stream one at
a time; DST is replaced only once the new folder is complete."""


def convert_main(argv: list[str] | None = None) -> int:
    """clip-convert; returns the exit status (1 with a one-line message on a bad source or argument)."""
    parser = argparse.ArgumentParser(
        prog="clip-convert",
        description=CONVERT_DESCRIPTION,
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


# Errors that are the user's (a bad file, flag, folder, or a missing extra): one line, exit status 1.
USER_ERRORS = (CheckpointError, ConfigError, FileNotFoundError, ImportError, ValueError)


def _fail(prog: str, error: BaseException) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 1


EMBED_DESCRIPTION = """clip-embed: embed a collection of images and/or captions with a CLIP model.

MODEL is a checkpoint folder or a Hub id in the local cache. --images takes a folder (searched
recursively), a glob, or webdataset .tar shards (brace patterns: 'data/{00000..00099}.tar'); a .txt
beside an image, or a sample's txt/json caption, is its caption. --texts takes a .txt (a caption a
line) or a CSV/TSV/JSONL/JSON/parquet table with a caption column and, optionally, an image-path
column (paths relative to --images, else to the table's folder).

DIR gets clip-retrieval's layout: img_emb/img_emb_N.npy, text_emb/text_emb_N.npy (L2-normalised),
metadata/metadata_N.parquet, errors.parquet (unreadable images, skipped) and manifest.json. A rerun
with the same DIR skips finished shards; other settings in an existing DIR are refused."""


def embed_main(argv: list[str] | None = None) -> int:
    """clip-embed; returns the exit status (1 with a one-line message on a bad input or argument)."""
    from clip_core.embedding import embed
    from clip_core.encoder import BACKENDS

    parser = argparse.ArgumentParser(
        prog="clip-embed", description=EMBED_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder or cached Hub id")
    parser.add_argument(
        "--out", metavar="DIR", required=True, help="output folder (created; resumed if it exists)"
    )
    parser.add_argument("--images", help="folder, glob, or webdataset .tar shards (brace patterns allowed)")
    parser.add_argument("--texts", help="captions: .txt, .csv, .tsv, .jsonl, .json or .parquet")
    parser.add_argument(
        "--caption-column", help="caption column of --texts (default: caption, text or title)"
    )
    parser.add_argument(
        "--image-column", help="image-path column of --texts (default: image_path, image, ...)"
    )
    parser.add_argument("--no-texts", action="store_true", help="ignore the captions that --images carry")
    parser.add_argument("--backend", default="torch", choices=list(BACKENDS))
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="compute dtype")
    parser.add_argument("--output-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="image decoding threads (default: CPUs, <= 8)"
    )
    parser.add_argument(
        "--shard-size", type=int, default=10_000, help="rows per output shard (tars: one per tar)"
    )
    parser.add_argument("--engine", default="local", choices=["local", "ray"])
    parser.add_argument("--num-actors", type=int, default=2, help="ray engine: encoders (one model each)")
    parser.add_argument(
        "--ray-address", default=None, help="ray engine: an existing cluster (default: local Ray)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = embed(
            args.model,
            images=args.images,
            texts=args.texts,
            out=args.out,
            backend=args.backend,
            dtype=args.dtype,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            shard_size=args.shard_size,
            output_dtype=args.output_dtype,
            caption_column=args.caption_column,
            image_column=args.image_column,
            with_texts=False if args.no_texts else None,
            engine=args.engine,
            num_actors=args.num_actors,
            ray_address=args.ray_address,
            quiet=args.quiet,
        )
    except USER_ERRORS as e:
        return _fail("clip-embed", e)
    except KeyboardInterrupt:
        print("clip-embed: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(result)
    return 0


def index_main(argv: list[str] | None = None) -> int:
    """clip-index: build a faiss index over a clip-embed folder and print its measured recall."""
    from clip_core.search import EXACT_LIMIT, INDEX_TYPES, build_index

    parser = argparse.ArgumentParser(
        prog="clip-index",
        description="clip-index: a faiss index over the embeddings of a clip-embed folder (saved in DIR/index/). "
        "Exact inner product up to --exact-limit rows, an IVF index beyond (or --index-type hnsw); "
        "recall@k is measured on held-out rows and printed.",
    )
    parser.add_argument("folder", metavar="DIR", help="a clip-embed output folder")
    parser.add_argument(
        "--kind", default=None, choices=["image", "text", "both"], help="default: image if present"
    )
    parser.add_argument("--index-type", default="auto", choices=list(INDEX_TYPES))
    parser.add_argument("--exact-limit", type=int, default=EXACT_LIMIT, help="largest exact (flat) index")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: about 4 sqrt(rows))")
    parser.add_argument("--recall-queries", type=int, default=1000, help="held-out rows for the recall")
    parser.add_argument("-k", type=int, default=10, help="recall@k")
    parser.add_argument(
        "--target-recall", type=float, default=0.95, help="raise nprobe / efSearch up to this"
    )
    args = parser.parse_args(argv)
    try:
        from clip_core.embedding import read_manifest

        manifest = read_manifest(args.folder)
        kinds = [args.kind] if args.kind in ("image", "text") else None
        if kinds is None:
            available = [k for k in ("image", "text") if manifest.get(f"has_{k}s")]
            kinds = available if args.kind == "both" else available[:1]
        for kind in kinds:
            _, report = build_index(
                args.folder,
                kind,
                args.index_type,
                exact_limit=args.exact_limit,
                recall_queries=args.recall_queries,
                k=args.k,
                target_recall=args.target_recall,
                nlist=args.nlist,
            )
            print(report)
    except USER_ERRORS as e:
        return _fail("clip-index", e)
    return 0


def search_main(argv: list[str] | None = None) -> int:
    """clip-search: the top-k rows of a clip-embed folder for a text or an image."""
    from clip_core.encoder import BACKENDS
    from clip_core.search import Index

    parser = argparse.ArgumentParser(
        prog="clip-search",
        description="clip-search: the rows of a clip-embed folder nearest to a text or an image "
        "(its saved clip-index index, else an exact search), with scores and metadata.",
    )
    parser.add_argument("folder", metavar="DIR", help="a clip-embed output folder")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query")
    query.add_argument("--image", help="an image file as the query")
    parser.add_argument("-k", type=int, default=10, help="number of results")
    parser.add_argument(
        "--kind", default=None, choices=["image", "text"], help="embeddings to search (default: image)"
    )
    parser.add_argument(
        "--backend", default=None, choices=list(BACKENDS), help="default: the folder's backend"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    if args.k < 1:
        return _fail("clip-search", ValueError(f"-k must be at least 1, got {args.k}"))
    try:
        index = Index.load(args.folder, args.kind, backend=args.backend)
        hits = index.search(text=args.text, image=args.image, k=args.k)
    except USER_ERRORS as e:
        return _fail("clip-search", e)
    if args.json:
        query = {"text": args.text} if args.text is not None else {"image": args.image}
        print(json.dumps({"query": query, "kind": index.kind, "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    print(f"{len(hits)} nearest {index.kind} rows of {len(index)} in {args.folder}:")
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata
        where = meta.get("image_path") or ""
        caption = meta.get("caption")
        text = f"  {caption!r}" if caption is not None else ""
        print(f"{rank:3d}  {hit.score:.4f}  {where}{text}")
    return 0
