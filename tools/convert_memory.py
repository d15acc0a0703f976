"""Peak memory of clip-convert on a random ViT-L/14-shaped CLIP (~428M parameters, fp32).

    python -m tools.convert_memory [--workdir DIR] [--formats safetensors pt tf flax all]   (from the repo root)

1. Writes the random checkpoint as model.safetensors tensor by tensor (never the whole model in
   memory), with config.json and the tokenizer / preprocessor files.
2. Runs clip-convert (``clip_core.cli.convert_main``) ``SRC DST --to FMT`` under GNU ``/usr/bin/time -v`` for each format
   and reports its peak RSS ("Maximum resident set size") against the checkpoint size, and the time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.formats.base import CheckpointReader
from clip_core.formats.safetensors_format import write_safetensors_file
from clip_core.weights import canonical_shapes


def vit_l14_config() -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, projection_dim=768),
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            patch_size=14,
            projection_dim=768,
        ),
        projection_dim=768,
    )


class RandomCheckpoint(CheckpointReader):
    """Random fp32 tensors made one at a time when a writer asks for them."""

    def __init__(self, config: CLIPConfig, seed: int = 0):
        super().__init__("<random ViT-L/14>")
        self._shapes = canonical_shapes(config)
        self._seed = seed

    def keys(self):
        return self._shapes.keys()

    def info(self, name):
        return self._shapes[name], np.dtype(np.float32)

    def get_tensor(self, name):
        index = list(self._shapes).index(name)
        rng = np.random.default_rng([self._seed, index])
        array = rng.standard_normal(self._shapes[name], dtype=np.float32)
        array *= 0.02
        return array


def build(folder: str) -> tuple[int, int]:
    from clip_core.image_processing import CLIPImageProcessor
    from clip_core.tokenization_fast import CLIPTokenizerFast

    config = vit_l14_config()
    os.makedirs(folder, exist_ok=True)
    state = RandomCheckpoint(config)
    write_safetensors_file(state, os.path.join(folder, "model.safetensors"))
    config.save_pretrained(folder)
    CLIPTokenizerFast().save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    params = sum(int(np.prod(s)) for s in canonical_shapes(config).values())
    return params, os.path.getsize(os.path.join(folder, "model.safetensors"))


def measure(source: str, destination: str, fmt: str) -> tuple[int, float, str]:
    """(peak RSS in bytes, wall seconds, summary line) of one clip-convert run under time -v."""
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-c",
        "import sys; from clip_core.cli import convert_main; sys.exit(convert_main())",  # clip-convert
        source,
        destination,
        "--to",
        fmt,
        "--overwrite",
        "--no-progress",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)  # "-c" finds clip_core in this folder
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return rss_kib * 1024, seconds, done.stdout.strip().splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=None, help="where to write the checkpoints (default: a temp dir)"
    )
    parser.add_argument("--formats", nargs="+", default=["safetensors", "pt", "tf", "flax", "all"])
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = parser.parse_args(argv)
    root = args.workdir or tempfile.mkdtemp(prefix="convert-memory-")
    try:
        source = os.path.join(root, "vit-l14")
        start = time.perf_counter()
        params, size = build(source)
        print(
            f"random ViT-L/14-shaped CLIP: {params / 1e6:.1f}M parameters, model.safetensors "
            f"{size / 2**30:.2f} GiB, written tensor by tensor in {time.perf_counter() - start:.1f}s"
        )
        print(f"{'--to':<12}{'peak RSS':>12}{'RSS/ckpt':>10}{'wall':>9}")
        for fmt in args.formats:
            rss, seconds, _ = measure(source, os.path.join(root, f"out-{fmt}"), fmt)
            print(f"{fmt:<12}{rss / 2**30:>8.2f} GiB{rss / size:>10.2f}{seconds:>8.1f}s", flush=True)
            if fmt != "all":
                shutil.rmtree(os.path.join(root, f"out-{fmt}"), ignore_errors=True)
        if "all" in args.formats:  # and back from each format the "all" run wrote
            print(f"\n{'from':<20}{'peak RSS':>12}{'RSS/ckpt':>10}{'wall':>9}   (--to safetensors)")
            for filename in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"):
                path = os.path.join(root, "out-all", filename)
                rss, seconds, _ = measure(path, os.path.join(root, "back"), "safetensors")
                print(f"{filename:<20}{rss / 2**30:>8.2f} GiB{rss / size:>10.2f}{seconds:>8.1f}s", flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
