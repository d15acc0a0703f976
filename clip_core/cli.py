"""clip_core's console scripts: argument parsing and messages only, the work is library code.

    clip-convert SRC DST [--to safetensors|pt|tf|flax|all] [--dtype fp32|bf16|fp16] [--overwrite]
                 [--config CONFIG] [--hidden-act quick_gelu|gelu] [--verify] [--progress | --no-progress]

``convert_main`` is ``clip-convert`` (``clip_core.conversion.convert``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
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
config.json, the weights, the tokenizer files, preprocessor_config.json and checksums.sha256.
Tensors stream one at a time; DST is claimed (or, with --overwrite, swapped) only once the new
folder is complete, and never replaced without --overwrite, even if it appears meanwhile. What a
killed run left beside DST is cleared by the next one."""


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
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check SRC against its checksums.sha256 before converting (and DST after writing it)",
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_const", const="always", dest="progress", default=True)
    bar.add_argument("--no-progress", action="store_const", const=False, dest="progress")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(), _terminate_as_interrupt():
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
                verify=args.verify,
            )
    except (CheckpointError, ConfigError, ValueError, OSError) as e:
        print(f"clip-convert: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clip-convert: interrupted; DST is as it was", file=sys.stderr)
        return 130
    print(summary)
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (kill, a job scheduler) ends the conversion like Ctrl-C: its clean-up runs."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
