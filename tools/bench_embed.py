"""Speed of clip-embed against the loop a user writes with transformers, on this machine.

    python -m tools.bench_embed [--rounds 3] [--backends torch,tf,flax] [--images 512] [--captions 5000]
                                [--no-ray] [--no-rss] [--workdir DIR] [--out bench_embed.json]

Data (made once in --workdir): a random CLIP of ViT-B/32 shape (fp32; random weights, so only speed
and agreement mean anything); JPEG photos of mixed sizes (long side 320 to 2048 px, landscape,
portrait and square crops of scikit-image's sample photos, a few greyscale, quality 90); captions of
realistic lengths (tools.tokenizer_texts.bench_captions joined one to four at a time, a few longer
than the 77-token context, which both sides truncate).

Theirs: transformers' CLIPProcessor + CLIPModel (PyTorch, sdpa), in batches of --batch-size:
``processor(images=[Image.open(p) ...])`` / ``processor(text=..., padding=True, truncation=True)``
then ``get_image_features`` / ``get_text_features`` under ``torch.no_grad()`` and normalised.
Ours: ``clip_core.embedding.embed`` end to end into an output folder (listing, decoding,
preprocessing, encoding, writing), the encoder loaded beforehand like theirs. Every method first runs
untimed on a subset that has every batch and token-length shape of the timed runs (XLA compiles per
shape for TF / Flax), then ``--rounds`` timed rounds, the methods interleaved within a round so that
load from other processes hits them alike; rates are medians with the range over rounds, and each
round's ratio is ours over theirs of that round. Embeddings are checked against theirs (max abs
diff <= 1e-5) every round.

Also: the Ray engine's rate with 2 actors on a local Ray (its start-up included, and without it),
and the peak RSS of a whole ``clip-embed`` run (a child process, ``resource.getrusage``) over 512
and 4,096 photos. ``uptime``'s load average is recorded before and after: the cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SOURCES = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"]
GREY_SOURCES = ["camera", "coins", "moon"]
LONG_SIDES = [320, 480, 640, 800, 1024, 1280, 1600, 2048]


def load_average() -> float:
    return os.getloadavg()[0]


SMALL = dict(  # for --rss-model small: the pipeline's memory, with little compute
    text_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4),
    vision_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4),
    projection_dim=256,
)


def make_model(folder: str, small: bool = False) -> str:
    from clip_core.config import CLIPConfig
    from clip_core.image_processing import CLIPImageProcessor
    from clip_core.processing import CLIPProcessor
    from clip_core.tokenization_fast import CLIPTokenizerFast
    from clip_core.weights import random_state, save_state_dict

    if not os.path.exists(os.path.join(folder, "config.json")):
        config = CLIPConfig.from_dict(SMALL) if small else CLIPConfig()  # ViT-B/32 (224 px, patch 32)
        save_state_dict(random_state(config, seed=0), folder, formats=("safetensors",))
        CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizerFast()).save_pretrained(
            folder
        )
        config.save_pretrained(folder)
    return folder


def make_photos(folder: str, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs of mixed sizes (the same ones for the same seed and count)."""
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{i:05d}.jpg") for i in range(count)]
    if all(os.path.exists(p) for p in paths):
        return paths
    rng = random.Random(seed)
    colour = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in SOURCES]
    grey = [Image.fromarray(getattr(skimage.data, name)()) for name in GREY_SOURCES]
    for path in paths:
        source = rng.choice(grey) if rng.random() < 0.05 else rng.choice(colour)
        aspect = rng.choice([4 / 3, 3 / 4, 1.0, 16 / 9, 2 / 3])
        long_side = rng.choice(LONG_SIDES)
        width, height = (
            (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
        )
        # a random crop of the source with that aspect, scaled to the size, sometimes mirrored
        crop_w = min(source.width, round(source.height * width / height))
        crop_h = min(source.height, round(crop_w * height / width))
        left, top = rng.randint(0, source.width - crop_w), rng.randint(0, source.height - crop_h)
        photo = source.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)
        if rng.random() < 0.5:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        photo.save(path, quality=90)
    return paths


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of realistic lengths: most one sentence, some two to four joined, a few very long."""
    from tools.tokenizer_texts import bench_captions

    pool = bench_captions(count * 3, seed=seed)
    rng = random.Random(seed)
    captions, position = [], 0
    for _ in range(count):
        roll = rng.random()
        parts = 1 if roll < 0.6 else 2 if roll < 0.85 else 3 if roll < 0.95 else 4 if roll < 0.98 else 9
        captions.append(", ".join(pool[position : position + parts]))
        position = (position + parts) % (len(pool) - 10)
    return captions


def token_lengths(captions: list[str]) -> dict:
    from clip_core.tokenization_fast import CLIPTokenizerFast

    lengths = np.array([min(77, len(ids)) for ids in CLIPTokenizerFast()(captions)["input_ids"]])
    return {
        "mean": float(lengths.mean()),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "max": int(lengths.max()),
        "share_over_77": float(
            np.mean([len(ids) > 77 for ids in CLIPTokenizerFast()(captions)["input_ids"]])
        ),
    }


# ---------------------------------------------------------------------------------------------------
# Theirs: the plain transformers loop


class Theirs:
    def __init__(self, folder: str):
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.torch = torch
        self.model = CLIPModel.from_pretrained(folder).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)

    def images(self, paths: list[str], batch: int) -> np.ndarray:
        out = []
        for start in range(0, len(paths), batch):
            images = [Image.open(p) for p in paths[start : start + batch]]
            inputs = self.processor(images=images, return_tensors="pt")
            with self.torch.no_grad():
                features = self.model.get_image_features(**inputs)
            out.append((features / features.norm(dim=-1, keepdim=True)).numpy())
        return np.concatenate(out)

    def texts(self, captions: list[str], batch: int) -> np.ndarray:
        out = []
        for start in range(0, len(captions), batch):
            inputs = self.processor(
                text=captions[start : start + batch], return_tensors="pt", padding=True, truncation=True
            )
            with self.torch.no_grad():
                features = self.model.get_text_features(**inputs)
            out.append((features / features.norm(dim=-1, keepdim=True)).numpy())
        return np.concatenate(out)


def ours(encoder, batch: int, images=None, texts=None) -> np.ndarray:
    from clip_core.embedding import embed

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as out:
        embed(encoder, images=images, texts=texts, out=os.path.join(out, "emb"), batch_size=batch)
        kind = "img_emb" if images is not None else "text_emb"
        shards = sorted(os.listdir(os.path.join(out, "emb", kind)), key=lambda n: int(n.split("_")[-1][:-4]))
        return np.concatenate([np.load(os.path.join(out, "emb", kind, name)) for name in shards])


# ---------------------------------------------------------------------------------------------------


def check(results: dict, embeddings: dict, reference_name: str) -> None:
    reference = embeddings[reference_name]
    for name, array in embeddings.items():
        diff = float(np.abs(array.astype(np.float32) - reference).max())
        results[name]["max_abs_diff"] = diff
        if diff > 1e-5:
            raise AssertionError(f"{name} differs from {reference_name} by {diff:.2e} > 1e-5")


def speed_section(kind: str, methods: dict, warm_up: dict, count: int, rounds: int) -> dict:
    """Times ``methods`` (name -> callable returning embeddings) in interleaved rounds, after one
    untimed run of each on a subset (``warm_up``: compiles, caches); checks them equal to theirs."""
    for name, run in warm_up.items():
        start = time.perf_counter()
        run()
        print(f"  {kind} warm-up {name}: {time.perf_counter() - start:.1f}s", flush=True)
    results = {name: {"rates": [], "loads": []} for name in methods}
    last = {}
    for round_number in range(1, rounds + 1):
        for name, run in methods.items():
            load = load_average()
            start = time.perf_counter()
            last[name] = run()
            rate = count / (time.perf_counter() - start)
            print(f"  {kind} round {round_number} {name}: {rate:.1f}/s (load {load:.1f})", flush=True)
            results[name]["rates"].append(rate)
            results[name]["loads"].append(load)
        check(results, last, "transformers")
    base = results["transformers"]
    for result in results.values():
        rates = result["rates"]
        result.update(median=statistics.median(rates), low=min(rates), high=max(rates))
        result["ratio"] = result["median"] / base["median"]
        # the ratio in each round, ours and theirs timed next to each other
        result["ratio_per_round"] = [a / b for a, b in zip(rates, base["rates"])]
    return results


def rss_child(images: str, model: str, backend: str) -> None:
    from clip_core.embedding import embed

    with tempfile.TemporaryDirectory(prefix="bench-embed-rss-") as out:
        start = time.perf_counter()
        result = embed(model, images=images, out=os.path.join(out, "emb"), batch_size=32, backend=backend)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({"rows": result.rows, "seconds": seconds, "peak_rss_bytes": peak}))


def measure_rss(images: str, model: str, backend: str) -> dict:
    command = [sys.executable, "-m", "tools.bench_embed", "--rss-child", images, "--model", model]
    command += ["--rss-backend", backend]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ray_rate(model: str, images: str, count: int) -> dict:
    from clip_core.embedding import embed

    with tempfile.TemporaryDirectory(prefix="bench-embed-ray-") as out:
        start = time.perf_counter()
        result = embed(
            model,
            images=images,
            out=os.path.join(out, "emb"),
            batch_size=32,
            shard_size=64,
            engine="ray",
            num_actors=2,
        )
        total = time.perf_counter() - start
    return {"rows": result.rows, "seconds": total, "rate_with_startup": count / total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "clip-bench-embed"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--backends", default="torch,tf,flax")
    parser.add_argument(
        "--warm-up-captions", type=int, default=1000, help="captions of the untimed first run"
    )
    parser.add_argument("--only", default="images,texts,ray,rss")
    parser.add_argument("--rss-sizes", default="512,4096")
    parser.add_argument("--rss-backend", default="torch", help="backend of the peak-RSS runs")
    parser.add_argument(
        "--rss-model", default="vit-b32", choices=["vit-b32", "small"], help="small: 2 layers of width 256"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.model, args.rss_backend)
        return 0

    from clip_core.encoder import load_encoder

    sections = set(args.only.split(","))
    backends = [b for b in args.backends.split(",") if b]
    os.makedirs(args.workdir, exist_ok=True)
    model = make_model(os.path.join(args.workdir, "vit-b32"))
    photos_dir = os.path.join(args.workdir, f"photos-{args.images}")
    paths = make_photos(photos_dir, args.images)
    captions = make_captions(args.captions)
    captions_file = os.path.join(args.workdir, f"captions-{args.captions}.txt")
    with open(captions_file, "w", encoding="utf-8") as f:
        f.write("\n".join(captions) + "\n")
    sizes = [Image.open(p).size for p in paths]
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg()},
        "batch_size": args.batch_size,
        "photos": {
            "count": len(paths),
            "mean_megapixels": float(np.mean([w * h for w, h in sizes]) / 1e6),
            "long_side_px": [min(map(max, sizes)), max(map(max, sizes))],
        },
        "captions": {"count": len(captions), "tokens": token_lengths(captions)},
    }
    print(json.dumps(report, indent=2), flush=True)

    theirs = Theirs(model) if {"images", "texts"} & sections else None
    encoders = (
        {backend: load_encoder(model, backend) for backend in backends}
        if {"images", "texts"} & sections
        else {}
    )
    batch = args.batch_size
    # warm-up subsets: every batch and token-length shape the timed runs meet (XLA compiles per shape)
    warm_dir = os.path.join(args.workdir, "photos-warm-up")
    os.makedirs(warm_dir, exist_ok=True)
    for path in paths[: 2 * batch]:
        if not os.path.exists(os.path.join(warm_dir, os.path.basename(path))):
            os.symlink(os.path.abspath(path), os.path.join(warm_dir, os.path.basename(path)))
    warm_captions = sorted(captions, key=len)[:: max(1, len(captions) // args.warm_up_captions)][
        : 1000 - 1000 % batch + len(captions) % batch
    ]
    warm_file = os.path.join(args.workdir, "captions-warm-up.txt")
    with open(warm_file, "w", encoding="utf-8") as f:
        f.write("\n".join(warm_captions) + "\n")
    if "images" in sections:
        methods = {"transformers": lambda: theirs.images(paths, batch)}
        warm = {"transformers": lambda: theirs.images(paths[: 2 * batch], batch)}
        for backend, encoder in encoders.items():
            methods[f"clip-embed {backend}"] = lambda e=encoder: ours(e, batch, images=photos_dir)
            warm[f"clip-embed {backend}"] = lambda e=encoder: ours(e, batch, images=warm_dir)
        report["images"] = speed_section("images", methods, warm, len(paths), args.rounds)
    if "texts" in sections:
        methods = {"transformers": lambda: theirs.texts(captions, batch)}
        warm = {"transformers": lambda: theirs.texts(warm_captions, batch)}
        for backend, encoder in encoders.items():
            methods[f"clip-embed {backend}"] = lambda e=encoder: ours(e, batch, texts=captions_file)
            warm[f"clip-embed {backend}"] = lambda e=encoder: ours(e, batch, texts=warm_file)
        report["texts"] = speed_section("texts", methods, warm, len(captions), args.rounds)
    theirs = encoders = None  # free the models before the child processes run
    if "ray" in sections:
        report["ray"] = ray_rate(model, photos_dir, len(paths))
        print("  ray:", report["ray"], flush=True)
    if "rss" in sections:
        report["rss"] = {}
        for count in map(int, args.rss_sizes.split(",")):
            folder = os.path.join(args.workdir, f"photos-{count}")
            make_photos(folder, count)
            small = args.rss_model == "small"
            rss_model = make_model(os.path.join(args.workdir, "small"), True) if small else model
            measured = measure_rss(folder, rss_model, args.rss_backend)
            report["rss"][count] = {"backend": args.rss_backend, "model": args.rss_model, **measured}
            print(f"  peak RSS over {count} photos:", report["rss"][count], flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    print_summary(report)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def print_summary(report: dict) -> None:
    print("\nmedian rate (low-high over rounds), ratio to transformers (per round):")
    for kind in ("images", "texts"):
        for name, result in report.get(kind, {}).items():
            rounds = ", ".join(f"{r:.2f}" for r in result["ratio_per_round"])
            print(
                f"  {kind:6s} {name:22s} {result['median']:8.1f}/s ({result['low']:.1f}-{result['high']:.1f})  "
                f"{result['ratio']:.2f}x ({rounds})  max |diff| {result['max_abs_diff']:.1e}"
            )
    if "ray" in report:
        print(f"  ray engine, 2 actors: {report['ray']['rate_with_startup']:.1f} img/s with start-up")
    for count, rss in report.get("rss", {}).items():
        print(f"  peak RSS, {count} photos: {rss['peak_rss_bytes'] / 2**20:.0f} MiB ({rss['seconds']:.0f}s)")


if __name__ == "__main__":
    sys.exit(main())
