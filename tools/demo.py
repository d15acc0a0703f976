"""make demo: one random CLIP, every checkpoint format, all three backends, the same answers.

    python -m tools.demo [--out DIR] [--seed N]     (from the repo root; what `make demo` runs)

1. Build a random CLIP of ViT-B/32 shape (fixed seed) and save it as a transformers folder.
2. Convert it with clip-convert into a folder per backend, each in that backend's native format
   (pytorch_model.bin, tf_model.h5, flax_model.msgpack), complete with tokenizer and preprocessor.
3. Load each backend from its own folder, run the same real photos (scikit-image's) and captions
   through CLIPProcessor and the model, and print the logits per backend, the largest difference
   between every pair of backends, and the time each backend took.

No downloads: the weights are random, so the logits carry no meaning; their agreement does.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter would bury the table
from clip_core.config import CLIPConfig
from clip_core.conversion import convert
from clip_core.image_processing import CLIPImageProcessor
from clip_core.processing import CLIPProcessor
from clip_core.tokenization_fast import CLIPTokenizerFast
from clip_core.weights import random_state, save_state_dict

CAPTIONS = ["a photo of a cat", "a portrait of an astronaut", "a cup of coffee on a saucer"]
NATIVE_FORMAT = {"torch": "pt", "tf": "tf", "flax": "flax"}


def photos() -> tuple[list[str], list[np.ndarray]]:
    from skimage import data

    names = ["chelsea", "astronaut", "coffee"]
    return names, [getattr(data, n)() for n in names]


def build_source(folder: str, seed: int) -> CLIPConfig:
    config = CLIPConfig()
    save_state_dict(random_state(config, seed=seed), folder, formats=("safetensors",))
    config.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizerFast()).save_pretrained(folder)
    return config


def run_torch(folder: str, batch) -> np.ndarray:
    import torch

    from clip_torch import CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return out.logits_per_image.numpy()


def run_tf(folder: str, batch) -> np.ndarray:
    import tensorflow as tf

    from clip_tf import TFCLIPModel

    model = TFCLIPModel.from_pretrained(folder)
    return model(**{k: tf.constant(v) for k, v in batch.items()}).logits_per_image.numpy()


def run_flax(folder: str, batch) -> np.ndarray:
    from clip_flax import FlaxCLIPModel

    model = FlaxCLIPModel.from_pretrained(folder)
    return np.asarray(model(**batch).logits_per_image)


RUNNERS = {"torch": run_torch, "tf": run_tf, "flax": run_flax}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="keep the folders here (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    root = args.out or tempfile.mkdtemp(prefix="clip-demo-")
    os.makedirs(root, exist_ok=True)
    try:
        source = os.path.join(root, "source")
        shutil.rmtree(source, ignore_errors=True)
        start = time.perf_counter()
        config = build_source(source, args.seed)
        print(
            f"1. random CLIP ViT-B/32 (seed {args.seed}) saved to {source} in {time.perf_counter() - start:.1f}s"
        )

        print("2. clip-convert into each backend's native format:")
        folders = {}
        for backend, fmt in NATIVE_FORMAT.items():
            folders[backend] = os.path.join(root, f"for-{backend}")
            summary = convert(source, folders[backend], formats=(fmt,), overwrite=True)
            weights = [f for f in summary.files if f.endswith((".bin", ".h5", ".msgpack"))]
            print(
                f"   {backend:<5} {', '.join(weights):<22} {summary.parameters / 1e6:.1f}M params "
                f"in {summary.seconds:.1f}s ({len(summary.files)} files)"
            )

        names, images = photos()
        processor = CLIPProcessor.from_pretrained(folders["torch"])
        batch = dict(processor(text=CAPTIONS, images=images, return_tensors="np", padding=True))
        print(
            f"3. {len(images)} photos ({', '.join(names)}) x {len(CAPTIONS)} captions, "
            f"pixel_values {batch['pixel_values'].shape}, input_ids {batch['input_ids'].shape}\n"
        )

        logits, seconds = {}, {}
        for backend, run in RUNNERS.items():
            start = time.perf_counter()
            logits[backend] = run(folders[backend], batch)
            seconds[backend] = time.perf_counter() - start

        print_logits(logits, names)
        print("\nlargest |difference| of logits_per_image between backends:")
        worst = 0.0
        for a, b in itertools.combinations(logits, 2):
            diff = float(np.max(np.abs(logits[a] - logits[b])))
            worst = max(worst, diff)
            print(f"   {a:>5} vs {b:<5} {diff:.2e}")
        print("\nseconds per backend (load from its own format + first forward, compile included):")
        for backend, s in seconds.items():
            print(f"   {backend:<5} {s:6.2f}s")
        ok = worst <= 1e-4
        print(f"\n{'OK' if ok else 'MISMATCH'}: backends agree within {worst:.1e} (fp32, threshold 1e-4)")
        del config
        return 0 if ok else 1
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)


def print_logits(logits: dict[str, np.ndarray], names: list[str]) -> None:
    header = f"{'backend':<8}{'image':<11}" + "".join(f"{c[:24]:>27}" for c in CAPTIONS)
    print(header)
    print("-" * len(header))
    for backend, table in logits.items():
        for name, row in zip(names, table):
            print(f"{backend:<8}{name:<11}" + "".join(f"{v:>27.6f}" for v in row))


if __name__ == "__main__":
    sys.exit(main())
