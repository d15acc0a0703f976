"""clip_core's console scripts: argument parsing and messages only, the work is library code.

    clip-convert SRC DST [--to safetensors|pt|tf|flax|all] [--dtype fp32|bf16|fp16] [--overwrite]
                 [--config CONFIG] [--hidden-act quick_gelu|gelu] [--progress | --no-progress]

    clip-export MODEL OUT --to onnx|savedmodel|tflite|jax [--towers text,vision|full]
                [--dtype fp32|fp16|bf16] [--quantize int8] [--hidden-states] [--overwrite] [--quiet]

``convert_main`` is ``clip-convert`` (``clip_core.conversion.convert``); ``export_main`` is
``clip-export`` (``clip_core.export.export``, which imports the backend that writes the format).
"""

from __future__ import annotations

import argparse
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
