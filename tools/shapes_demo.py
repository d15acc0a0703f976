"""make demo-shapes: zero-shot, retrieval and heatmaps of a real (tiny) trained CLIP, in all three backends.

    python -m tools.shapes_demo [--model tests/data/shapes-clip] [--out docs] [--images 240]

The model is the committed shapes CLIP (tools/train_shapes.py trained it on clip_flax.data's synthetic
shapes: 24 classes such as "red circle"). On images it never saw (a fresh seed), in each backend:

1. zero-shot accuracy with one prompt ("a {}.") and with the "shapes" prompt ensemble;
2. retrieval among one image per class, each with 8 captions (CLIP_benchmark's keys, plus MRR);
3. how often the patch most similar to "a {colour} {shape}" lies inside that shape, against chance;
4. the largest difference between the backends' class embeddings and heatmaps;

then it draws the README's three pictures (heatmaps, similarity grid, top-5 bars) into --out.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_MODEL = os.path.join("tests", "data", "shapes-clip")
EVAL_SEED = 4321
BACKENDS = ("torch", "tf", "flax")


def evaluate_backend(backend: str, model: str, shapes, processor) -> dict:
    from clip_core.encoder import load_encoder
    from clip_core.encoding import encode_images, encode_texts
    from clip_core.explain import heatmap_hit_rate, patch_maps
    from clip_core.metrics import retrieval_metrics, zeroshot_metrics
    from clip_core.templates import TEMPLATE_SETS, fill
    from clip_core.zeroshot import ZeroShotClassifier

    start = time.perf_counter()
    encoder = load_encoder(model, backend)
    images = [shapes.draw(i) for i in range(len(shapes))]
    labels = np.array([shapes.label(i) for i in range(len(shapes))])
    pixels = processor.image_processor(images, return_tensors="np")["pixel_values"]
    image_embeds = encode_images(encoder, processor.image_processor, images)
    out = {"encoder": encoder, "image_embeds": image_embeds}
    for name, templates in (("one prompt", ("a {}.",)), ("ensemble", TEMPLATE_SETS["shapes"])):
        clf = ZeroShotClassifier(
            encoder, shapes.class_names, templates, processor.tokenizer, processor.image_processor
        )
        out[name] = zeroshot_metrics(image_embeds @ clf.weights.T, labels)
        out[f"{name} weights"] = clf.weights
    out["classifier"] = clf
    # retrieval: groups of one image per class, 8 captions each (captions unique to their image)
    templates = TEMPLATE_SETS["shapes"]
    members = [np.flatnonzero(labels == c) for c in range(len(shapes.class_names))]
    runs = []
    for g in range(min(len(m) for m in members)):
        rows = [m[g] for m in members]
        captions = [fill(t, shapes.class_names[labels[i]]) for i in rows for t in templates]
        texts = encode_texts(encoder, processor.tokenizer, captions)
        runs.append(
            retrieval_metrics(
                image_embeds[rows], texts, np.repeat(np.arange(len(rows)), len(templates)), (1, 5)
            )
        )
    out["retrieval"] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out["retrieval groups"] = len(runs)
    single = ZeroShotClassifier(encoder, shapes.class_names, ("a {}",), processor.tokenizer)
    masks = np.stack([shapes.mask(i) for i in range(len(shapes))])
    out["heatmap"] = heatmap_hit_rate(encoder, pixels, single.weights[labels], masks)
    out["maps"] = patch_maps(encoder, pixels[:8], single.weights)
    out["seconds"] = time.perf_counter() - start
    return out


def draw_pictures(out_dir: str, model: str, shapes, processor, result: dict) -> list[str]:
    from clip_core import plots
    from clip_core.explain import Explainer

    os.makedirs(out_dir, exist_ok=True)
    names = shapes.class_names
    labels = [shapes.label(i) for i in range(len(shapes))]
    first = {}
    for i, c in enumerate(labels):
        first.setdefault(names[c], i)
    written = []
    # 1. heatmaps: where a red circle matches "a red circle", by the three maps we have
    from clip_core.encoding import tokenize_texts

    encoder = result["encoder"]
    image = shapes.draw(first["red circle"])
    text = "a red circle"
    maps, titles = [], []
    for path in ("values", "tokens"):
        explained = Explainer(encoder, processor.tokenizer, processor.image_processor, path).image_text_maps(
            [image], [text]
        )
        maps.append(explained.maps[0, 0])
        titles.append(f"patch {path}" + (" (default)" if path == "values" else ""))
    ids, mask = tokenize_texts(processor.tokenizer, [text], 16)
    maps.append(encoder.relevance_maps(explained.pixel_values, ids, mask)[0][0])
    titles.append("relevance (PyTorch)")
    shown = plots.processed_image(explained.pixel_values[0], processor.image_processor)
    written.append(
        plots.plot_heatmaps(
            shown,
            maps,
            titles,
            os.path.join(out_dir, "shapes-heatmap.png"),
            label="each map: lowest to highest",
            title=f'where the image matches "{text}" (score {float(explained.scores[0, 0]):.2f})',
            scale="each",
            quote=False,
        )
    )
    # 2. similarity grid: five shapes against their five captions
    picked = ["red circle", "green square", "blue triangle", "yellow cross", "purple circle"]
    rows = [first[n] for n in picked]
    captions = [f"a {n}" for n in picked]
    from clip_core.encoding import encode_texts

    text_embeds = encode_texts(result["encoder"], processor.tokenizer, captions)
    sim = result["image_embeds"][rows] @ text_embeds.T
    images = [shapes.draw(i) for i in rows]
    written.append(
        plots.plot_similarity_grid(images, captions, sim, os.path.join(out_dir, "shapes-similarity.png"))
    )
    # 3. top-5 bars of three images
    rows = [first[n] for n in ("orange cross", "green triangle", "blue circle")]
    top = result["classifier"].classify_embeddings(result["image_embeds"][rows], k=5)
    titles = [f"true: {names[labels[i]]}" for i in rows]
    written.append(
        plots.plot_topk(
            [shapes.draw(i) for i in rows], top, os.path.join(out_dir, "shapes-topk.png"), titles=titles
        )
    )
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default="docs", help="folder for the three PNGs")
    parser.add_argument("--images", type=int, default=480, help="fresh shape images to evaluate on")
    args = parser.parse_args(argv)

    from clip_core.processing import CLIPProcessor
    from clip_flax.data import SyntheticShapes

    processor = CLIPProcessor.from_pretrained(args.model)
    size = processor.image_processor.crop_size["height"]
    shapes = SyntheticShapes(args.images, size, seed=EVAL_SEED)
    print(
        f"shapes CLIP {args.model}: {args.images} fresh images (seed {EVAL_SEED}), {len(shapes.class_names)} classes (chance 1/{len(shapes.class_names)})"
    )
    results = {b: evaluate_backend(b, args.model, shapes, processor) for b in BACKENDS}

    header = f"{'backend':8} {'acc1':>6} {'acc1 ens':>8} {'acc5 ens':>8} {'img R@1':>7} {'txt R@1':>7} {'mrr':>6} {'heatmap':>8} {'chance':>6} {'time':>6}"
    print(header)
    print("-" * len(header))
    for b, r in results.items():
        rt = r["retrieval"]
        print(
            f"{b:8} {r['one prompt']['acc1']:6.3f} {r['ensemble']['acc1']:8.3f} {r['ensemble']['acc5']:8.3f} "
            f"{rt['image_retrieval_recall@1']:7.3f} {rt['text_retrieval_recall@1']:7.3f} {rt['mrr']:6.3f} "
            f"{r['heatmap']['hit_rate']:8.3f} {r['heatmap']['chance']:6.3f} {r['seconds']:5.1f}s"
        )
    print(
        f"retrieval: {results['torch']['retrieval groups']} groups of 24 images (one per class) x 8 captions; "
        "heatmap: share of images whose most similar patch lies inside the shape"
    )
    print("largest |difference| between backends (class embeddings, heatmaps):")
    worst = 0.0
    for a, b in itertools.combinations(BACKENDS, 2):
        dw = float(np.abs(results[a]["ensemble weights"] - results[b]["ensemble weights"]).max())
        dm = float(np.abs(results[a]["maps"] - results[b]["maps"]).max())
        worst = max(worst, dw, dm)
        print(f"   {a:>5} vs {b:<5} {dw:.2e}  {dm:.2e}")
    for path in draw_pictures(args.out, args.model, shapes, processor, results["torch"]):
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
    if worst > 1e-5:
        print(f"FAIL: backends differ by {worst:.2e}")
        return 1
    print(f"OK: backends agree within {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
