"""clip_core's console scripts: argument parsing and messages only, the work is library code.

    clip-convert SRC DST [--to safetensors|pt|tf|flax|all] [--dtype fp32|bf16|fp16] [--overwrite]
                 [--config CONFIG] [--hidden-act quick_gelu|gelu] [--progress | --no-progress]

    clip-eval zeroshot|retrieval MODEL --images DIR [--labels FILE | --captions FILE] [-o result.json]
    clip-explain MODEL IMAGE TEXT [TEXT ...] -o out.png [--backend torch|tf|flax] [--method patches|relevance]

    clip-export MODEL OUT --to onnx|savedmodel|tflite|jax [--towers text,vision|full]
                [--dtype fp32|fp16|bf16] [--quantize int8] [--hidden-states] [--overwrite] [--quiet]

``convert_main`` is ``clip-convert`` (``clip_core.conversion.convert``), ``eval_main`` ``clip-eval``
(``clip_core.evaluation``), ``explain_main`` ``clip-explain`` (``clip_core.explain``, ``clip_core.plots``),
``export_main`` ``clip-export`` (``clip_core.export.export``, which imports the backend that writes
the format).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# clip-eval and clip-explain (clip_core.evaluation, clip_core.explain, clip_core.plots)

EVAL_DESCRIPTION = """clip-eval: zero-shot classification and image-text retrieval metrics, on any backend.

  clip-eval zeroshot MODEL --images DIR [--labels FILE] [--templates generic|FILE] [-o result.json]
  clip-eval retrieval MODEL --images DIR --captions FILE [--recall-k 1 5 10] [-o result.json]

Results are CLIP_benchmark's JSON (acc1, acc5, mean_per_class_recall; image_retrieval_recall@k,
text_retrieval_recall@k, plus mrr and mean ranks), printed as a table. --embeddings DIR reuses a
clip-embed output folder (img_emb/, text_emb/, metadata/) instead of running the image tower."""

EXPLAIN_DESCRIPTION = """clip-explain: which parts of an image match a text, as heatmaps in a PNG.

  clip-explain MODEL IMAGE "a red circle" "a blue square" -o out.png [--backend torch|tf|flax]

Each panel shows the cosine of every image patch with the text's embedding, on one colour scale;
the title gives the image-text score. Patch embeddings (--patches): "values" (default, MaskCLIP: the
last layer's value path through post_layernorm and the visual projection) or "tokens" (the last
layer's patch tokens, which in trained CLIPs light up the background more than the object).
--tokens shows one panel per token of the (first) text instead; --method relevance (PyTorch) shows
the gradient-weighted attention relevance of Chefer et al. instead of patch cosines."""

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, ImportError, TypeError, OSError)


def _model_options(parser) -> None:
    parser.add_argument("model", help="checkpoint folder (config.json, weights, tokenizer) or cached Hub id")
    parser.add_argument("--backend", default="torch", choices=["torch", "tf", "flax"])
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="compute dtype")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-eval", description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{zeroshot,retrieval}")
    zs = tasks.add_parser("zeroshot", help="zero-shot classification accuracy of labelled images")
    _model_options(zs)
    zs.add_argument("--images", required=True, help="folder of the images (or of one sub-folder per class)")
    zs.add_argument(
        "--labels", help="CSV/JSONL of image,label (paths relative to --images); default: sub-folders"
    )
    zs.add_argument("--classes", help="class names, one per line (their order; labels may be indices)")
    zs.add_argument("--templates", default="generic", help="template set name (clip_core.templates) or file")
    zs.add_argument("--top-k", type=int, nargs="+", default=[1, 5], help="accuracies to report (acc1, acc5)")
    zs.add_argument("--plot", help="PNG of the top-5 classes of the first --plot-count images")
    rt = tasks.add_parser(
        "retrieval", help="image<->text retrieval recall@k, MRR and ranks of captioned images"
    )
    _model_options(rt)
    rt.add_argument(
        "--images", help="folder the caption file's image paths are relative to (default: its folder)"
    )
    rt.add_argument(
        "--captions", help="CSV/JSONL of image,caption (several rows or a list for several captions)"
    )
    rt.add_argument(
        "--recall-k", type=int, nargs="+", default=[1, 5, 10], help="k of recall@k (default 1 5 10)"
    )
    rt.add_argument("--plot", help="PNG of the similarity grid of the first --plot-count images and captions")
    for sub in (zs, rt):
        sub.add_argument(
            "--embeddings", help="clip-embed output folder to reuse (img_emb/, text_emb/, metadata/)"
        )
        sub.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
        sub.add_argument("--dataset", help="dataset name for the result (default: from the folder / file)")
        sub.add_argument("-o", "--output", help="write the JSON result here")
        sub.add_argument("--plot-count", type=int, default=4, help="images in the --plot picture")
    return parser


def _write_json(path: str, data: dict) -> None:
    import json

    from clip_core.files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _eval_plot(args, details: dict) -> str:
    from clip_core import plots

    count = max(1, args.plot_count)
    if args.task == "zeroshot":
        clf = details["classifier"]
        top = clf.classify_embeddings(details["image_embeds"][:count], k=5)
        names = [clf.class_names[i] for i in details["labels"][:count]]
        return plots.plot_topk(details["paths"][:count], top, args.plot, titles=[f"true: {n}" for n in names])
    paths = details["paths"]
    if not paths or not all(os.path.isfile(str(p)) for p in paths[:count]):
        raise ValueError(
            "--plot needs the image files; the embeddings folder's metadata names none found on disk"
        )
    owners = np.asarray(details["text_to_image"])
    shown = list(range(min(count, len(paths))))
    first = [int(np.flatnonzero(owners == i)[0]) for i in shown]
    captions = details["captions"] or [f"text {t}" for t in range(len(owners))]
    similarity = details["image_embeds"][shown] @ details["text_embeds"][first].T
    return plots.plot_similarity_grid(
        [paths[i] for i in shown], [captions[t] for t in first], similarity, args.plot
    )


def eval_main(argv: list[str] | None = None) -> int:
    """clip-eval; returns the exit status (1 with a one-line message on a bad file or argument)."""
    args = _eval_parser().parse_args(argv)
    from clip_core import evaluation

    common = dict(
        backend=args.backend,
        dtype=args.dtype,
        embeddings=args.embeddings,
        batch_size=args.batch_size,
        progress=not args.quiet,
        dataset=args.dataset,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if args.task == "zeroshot":
                result, details = evaluation.zeroshot_job(
                    args.model,
                    args.images,
                    args.labels,
                    args.classes,
                    args.templates,
                    ks=args.top_k,
                    **common,
                )
            else:
                if not args.captions and not args.embeddings:
                    raise ValueError("retrieval needs --captions FILE (or --embeddings DIR)")
                images = args.images or (
                    os.path.dirname(os.path.abspath(args.captions)) if args.captions else None
                )
                result, details = evaluation.retrieval_job(
                    args.model, images, args.captions, ks=args.recall_k, **common
                )
            if args.output:
                _write_json(args.output, result)
            if args.plot:
                _eval_plot(args, details)
    except (CheckpointError, ConfigError, *USER_ERRORS) as e:
        print(f"clip-eval: error: {e}", file=sys.stderr)
        return 1
    print(evaluation.result_table(result))
    for path in (args.output, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-explain",
        description=EXPLAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_options(parser)
    parser.add_argument("image", help="image file")
    parser.add_argument("texts", nargs="+", help="one or more texts")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--method", default="patches", choices=["patches", "relevance"])
    parser.add_argument("--patches", default="values", choices=["values", "tokens"], help="patch embeddings")
    parser.add_argument("--tokens", action="store_true", help="one panel per token of the first text")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the image")
    parser.add_argument(
        "--scale", default="shared", choices=["shared", "each"], help="one colour scale, or each map its own"
    )
    parser.add_argument("--json", help="also write the maps and scores as JSON here")
    return parser


def _relevance(explainer, pixels: np.ndarray, texts: list[str]) -> np.ndarray:
    """Chefer relevance maps (texts, grid_h, grid_w) for one image against each text (PyTorch)."""
    from clip_core.encoding import tokenize_texts

    limit = int(explainer.encoder.config.text_config.max_position_embeddings)
    ids, mask = tokenize_texts(explainer.tokenizer, texts, limit)
    return explainer.encoder.relevance_maps(np.repeat(pixels, len(texts), axis=0), ids, mask)[0]


def explain_main(argv: list[str] | None = None) -> int:
    """clip-explain; returns the exit status (1 with a one-line message on a bad file or argument)."""
    args = _explain_parser().parse_args(argv)
    try:
        if args.method == "relevance" and args.backend != "torch":
            raise ValueError(
                "--method relevance needs gradients of attention maps: PyTorch only (--backend torch)"
            )
        if args.method == "relevance" and args.tokens:
            raise ValueError(
                "--tokens shows patch cosines per token; it does not combine with --method relevance"
            )
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
        from clip_core import plots
        from clip_core.encoding import open_image
        from clip_core.explain import Explainer, peak

        image = open_image(args.image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            explainer = Explainer.from_pretrained(args.model, args.backend, args.dtype, args.patches)
        if args.tokens:
            result = explainer.token_maps(image, args.texts[0])
            labels, maps, scores = result.tokens, list(result.maps), list(result.token_scores)
            title, label = (
                f'"{args.texts[0]}": each token against the image (score {result.score:.3f})',
                "patch-token cosine",
            )
            pixels = explainer.image_processor([image], return_tensors="np")["pixel_values"]
        else:
            result = explainer.image_text_maps([image], args.texts)
            labels, scores, pixels = list(args.texts), list(result.scores[0]), result.pixel_values
            if args.method == "relevance":
                maps, label = list(_relevance(explainer, pixels, labels)), "relevance (Chefer et al.)"
            else:
                maps, label = list(result.maps[0]), "patch-text cosine"
            title = None
        shown = plots.processed_image(pixels[0], explainer.image_processor)
        plots.plot_heatmaps(
            shown, maps, labels, args.output, scores, args.alpha, label, title, scale=args.scale
        )
        if args.json:
            _write_json(
                args.json,
                {
                    "model": args.model,
                    "backend": args.backend,
                    "method": args.method,
                    "patches": args.patches,
                    "image": args.image,
                    "items": [
                        {"text": t, "score": float(s), "map": np.asarray(m).round(6).tolist()}
                        for t, s, m in zip(labels, scores, maps)
                    ],
                },
            )
    except (CheckpointError, ConfigError, *USER_ERRORS) as e:
        print(f"clip-explain: error: {e}", file=sys.stderr)
        return 1
    width = max(len(t) for t in labels)
    print(
        f"{'text'.ljust(width)}  score    peak (row, col) of the {maps[0].shape[0]}x{maps[0].shape[1]} grid"
    )
    for text, score, m in zip(labels, scores, maps):
        print(f"{text.ljust(width)}  {float(score):+.4f}  {peak(m)}")
    print(f"wrote {args.output}")
    return 0


EXPORT_DESCRIPTION = """clip-export: export a CLIP model for deployment, checked against the source on the spot.

  onnx        text.onnx, vision.onnx (full.onnx): ONNX Runtime; --quantize int8 (needs [onnx], torch)
  savedmodel  OUT/1/ (TF Serving's layout) with the signatures get_text_features,
              get_image_features and serving_default (the full model's logits) (needs [tf])
  tflite      text.tflite, vision.tflite: LiteRT (ai-edge-litert); --dtype fp16 stores float16
              weights, --quantize int8 int8 weights (needs [tf], [tflite])
  jax         text.jax, vision.jax (full.jax): jax.export's serialised StableHLO, taking the
              weights in params.npz; reloads with jax alone (needs [flax])

MODEL is a checkpoint folder (any weight format) or a Hub id in the local cache. Every export is
run on a probe of coloured shapes and their captions and compared with the source model (max abs
difference, fp32: <= 1e-5, TFLite <= 1e-4); an int8 export reports its cosine to the fp32
features and its zero-shot agreement. OUT appears only once the export has passed its check."""


def export_main(argv: list[str] | None = None) -> int:
    """clip-export; returns the exit status (1 with a one-line message on a bad model or option)."""
    from clip_core.export import FORMATS, ExportError, export

    parser = argparse.ArgumentParser(
        prog="clip-export",
        description=EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="checkpoint folder or cached Hub id")
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--to", required=True, choices=list(FORMATS))
    parser.add_argument(
        "--towers", default=None, help="text,vision (default), full, or a comma-separated mix"
    )
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--quantize", default=None, choices=["int8"])
    parser.add_argument("--hidden-states", action="store_true", help="towers also output last_hidden_state")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            report = export(
                args.model,
                args.out,
                to=args.to,
                towers=args.towers,
                dtype=args.dtype,
                quantize=args.quantize,
                hidden_states=args.hidden_states,
                overwrite=args.overwrite,
                progress=False if args.quiet else "always",
            )
    except (ExportError, CheckpointError, ConfigError, FileExistsError, FileNotFoundError, ImportError) as e:
        print(f"clip-export: error: {e}", file=sys.stderr)
        return 1
    print(report)
    return 0
