"""Train the small shapes CLIP that the tests, the README pictures and `make demo-shapes` use.

    python -m tools.train_shapes [--out tests/data/shapes-clip] [--steps 1500] [--seed 0]

What it does, start to end (10 to 35 minutes on 2 CPU cores, depending on what else runs):

1. A vocabulary of its own: OpenAI's byte-level BPE cut down to the 512 byte symbols, the merges
   that spell the words of our prompt templates and class names (in OpenAI's merge order, so those
   words get OpenAI's tokens), and the two special tokens. Any other text still tokenises (into
   byte-level pieces); only the token embedding table shrinks from 49,408 rows to under 1,000, which
   keeps the committed checkpoint small.
2. A CLIP of 64x64 images in 8x8 patches (an 8x8 patch grid, for heatmaps), width 64, trained from
   scratch with clip_flax.training (AdamW, warm-up + cosine, the symmetric contrastive loss) on
   clip_flax.data.SyntheticShapes: one coloured shape per image, 24 classes (6 colours x 4 shapes),
   each caption a random template of clip_core.templates' "shapes" set ("a drawing of a red circle.").
3. The weights are saved (model.safetensors, config, tokenizer and preprocessor files), converted with
   clip_core.conversion.convert into every format, and loaded by all three backends, which must agree
   within 1e-5; the script then prints (and writes to training.json beside the weights) the held-out
   zero-shot accuracy, the retrieval metrics and the heatmap figure (how often the patch most similar
   to "a {colour} {shape}" lies inside that shape, against the chance of a random patch).

The committed tests/data/shapes-clip was made by ``python -m tools.train_shapes`` with the defaults
(seed 0); training.json there records the command, the steps and the figures it printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_OUT = os.path.join("tests", "data", "shapes-clip")
TRAIN_TEMPLATES = "shapes"


def vocabulary_words() -> set[str]:
    """Every word of our template sets and of the shapes' class names (lower case, as tokenised)."""
    import regex

    from clip_core.templates import TEMPLATE_SETS
    from clip_flax.data import COLOURS, SHAPES

    text = " ".join(t.replace("{}", " ").replace("{c}", " ") for ts in TEMPLATE_SETS.values() for t in ts)
    text += " " + " ".join([*COLOURS, *SHAPES, "shape", "shapes", "background", "and", "with"])
    return set(regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", text.lower()))


def small_vocabulary(words) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges): byte symbols, the OpenAI merges that build ``words``, in OpenAI's order, specials."""
    from clip_core.bpe_vocab import BOS_TOKEN, END_OF_WORD, EOS_TOKEN, byte_encode, openai_vocab

    _, merges = openai_vocab()
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    used = set()
    for word in words:
        symbols = [*byte_encode(word)]
        symbols[-1] += END_OF_WORD
        while len(symbols) > 1:  # the textbook BPE, recording each merge it applies
            pairs = [(ranks.get(p, len(ranks)), p) for p in zip(symbols, symbols[1:])]
            rank, pair = min(pairs)
            if rank == len(ranks):
                break
            used.add(rank)
            i = 0
            merged = []
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
    kept = [merges[r] for r in sorted(used)]
    from clip_core.bpe_vocab import BYTE_TO_UNICODE

    symbols = list(BYTE_TO_UNICODE.values())
    tokens = [
        *symbols,
        *(s + END_OF_WORD for s in symbols),
        *("".join(m) for m in kept),
        BOS_TOKEN,
        EOS_TOKEN,
    ]
    return {t: i for i, t in enumerate(tokens)}, kept


def shapes_config(vocab_size: int):
    """clip_flax.training's tiny config with our vocabulary, 64x64 images (an 8x8 patch grid) and a
    third vision layer."""
    from clip_core.config import CLIPConfig
    from clip_flax.training import tiny_config

    config = tiny_config().to_dict()
    specials = dict(bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    config["text_config"].update(vocab_size=vocab_size, **specials)
    config["vision_config"].update(image_size=64, num_hidden_layers=3)
    return CLIPConfig.from_dict(config)


class CaptionedShapes:
    """clip_flax.data.SyntheticShapes with each caption a template of the "shapes" set, chosen by
    (seed, i) alone (so every resume and host sees the same caption)."""

    def __init__(self, n: int, image_size: int, seed: int, templates) -> None:
        from clip_flax.data import SyntheticShapes

        self.shapes = SyntheticShapes(n, image_size, seed)
        self.templates = templates
        self.class_names = self.shapes.class_names
        self.problems = self.shapes.problems
        choice = np.random.default_rng([seed, 0xCA97]).integers(0, len(templates), n)
        self._template = choice.tolist()

    def __len__(self) -> int:
        return len(self.shapes)

    def label(self, i: int) -> int:
        return self.shapes.label(i)

    def caption(self, i: int) -> str:
        from clip_core.templates import fill

        return fill(self.templates[self._template[i]], self.class_names[self.label(i)])

    def describe(self, i: int) -> str:
        return self.shapes.describe(i)

    def report(self, message: str) -> None:
        self.shapes.report(message)

    def load(self, i: int):
        return self.shapes.draw(i), self.caption(i)


def write_tokenizer_and_processor(folder: str, config) -> None:
    from clip_core.bpe_vocab import write_vocab_files
    from clip_core.image_processing import CLIPImageProcessor
    from clip_core.processing import CLIPProcessor
    from clip_core.tokenization_fast import CLIPTokenizerFast

    vocab, merges = small_vocabulary(vocabulary_words())
    if len(vocab) != config.text_config.vocab_size:
        raise RuntimeError(f"vocabulary of {len(vocab)} tokens, config says {config.text_config.vocab_size}")
    os.makedirs(folder, exist_ok=True)
    write_vocab_files(folder, vocab, merges)
    tokenizer = CLIPTokenizerFast(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    tokenizer.model_max_length = config.text_config.max_position_embeddings
    size = config.vision_config.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    # tokenizer.json alone would do for the fast tokenizer; vocab.json + merges.txt serve the slow one
    # and transformers' CLIPTokenizer.


def train(args) -> tuple[str, dict]:
    """Train and save the Flax weights with tokenizer and preprocessor files; returns (folder, record)."""
    import jax

    from clip_core.processing import CLIPProcessor
    from clip_core.templates import TEMPLATE_SETS
    from clip_flax import FlaxCLIPModel
    from clip_flax import data as D
    from clip_flax import training as T

    work = tempfile.mkdtemp(prefix="shapes-clip-")
    vocab, _ = small_vocabulary(vocabulary_words())
    config = shapes_config(len(vocab))
    write_tokenizer_and_processor(work, config)
    processor = CLIPProcessor.from_pretrained(work)
    max_length = config.text_config.max_position_embeddings

    model = FlaxCLIPModel(config, _do_init=False)
    model.params = T.init_params(config, seed=args.seed)
    dataset = CaptionedShapes(
        args.examples, config.vision_config.image_size, args.seed, TEMPLATE_SETS[TRAIN_TEMPLATES]
    )
    train_idx, _ = D.train_eval_split(len(dataset), 0.0, seed=args.seed)
    tcfg = T.TrainConfig(
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        total_steps=args.steps,
        weight_decay=0.1,
        seed=args.seed,
    )
    trainer = T.Trainer(model, tcfg, T.make_mesh())
    state = trainer.init_state()
    loader = D.BatchLoader(dataset, train_idx, args.batch_size, processor, max_length, seed=args.seed)
    start = time.perf_counter()
    losses = {}
    for step, batch in loader.iter_from(0, args.steps):
        state, metrics = trainer.step(state, batch)
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            loss = float(jax.device_get(metrics["loss"]))
            losses[step + 1] = loss
            print(
                f"step {step + 1}/{args.steps} loss {loss:.4f} ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    params = jax.device_get(state.params)
    model.save_pretrained(work, params=params)
    record = {
        "command": "python -m tools.train_shapes " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "warmup_steps": args.warmup,
        "train_examples": args.examples,
        "caption_templates": TRAIN_TEMPLATES,
        "losses": losses,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return work, record


def retrieval_by_groups(encoder, processor, shapes, image_embeds) -> dict:
    """Retrieval among groups of one image per class, each image with a caption per template of the
    "shapes" set (so captions are unique to their image); the metrics averaged over the groups."""
    from clip_core.encoding import encode_texts
    from clip_core.metrics import retrieval_metrics
    from clip_core.templates import TEMPLATE_SETS, fill

    templates = TEMPLATE_SETS["shapes"]
    by_class = [
        [i for i in range(len(shapes)) if shapes.label(i) == c] for c in range(len(shapes.class_names))
    ]
    groups = min(len(members) for members in by_class)
    results = []
    for g in range(groups):
        rows = [members[g] for members in by_class]
        captions = [fill(t, shapes.class_names[shapes.label(i)]) for i in rows for t in templates]
        text_embeds = encode_texts(encoder, processor.tokenizer, captions)
        owners = np.repeat(np.arange(len(rows)), len(templates))
        results.append(retrieval_metrics(image_embeds[rows], text_embeds, owners, ks=(1, 5)))
    out = {key: float(np.mean([r[key] for r in results])) for key in results[0]}
    out["groups"] = groups
    out["images_per_group"] = len(by_class)
    out["captions_per_image"] = len(templates)
    return out


def evaluate(folder: str, eval_examples: int, eval_seed: int) -> dict:
    """Zero-shot, retrieval and heatmap figures on fresh shapes (a seed training never saw), per backend."""
    from clip_core.encoder import load_encoder
    from clip_core.encoding import encode_images
    from clip_core.explain import heatmap_hit_rate
    from clip_core.metrics import zeroshot_metrics
    from clip_core.processing import CLIPProcessor
    from clip_core.templates import TEMPLATE_SETS
    from clip_core.zeroshot import ZeroShotClassifier
    from clip_flax.data import SyntheticShapes

    processor = CLIPProcessor.from_pretrained(folder)
    shapes = SyntheticShapes(eval_examples, processor.image_processor.crop_size["height"], seed=eval_seed)
    images = [shapes.draw(i) for i in range(len(shapes))]
    labels = np.asarray([shapes.label(i) for i in range(len(shapes))])
    masks = np.stack([shapes.mask(i) for i in range(len(shapes))])
    out = {"eval_examples": eval_examples, "eval_seed": eval_seed, "backends": {}}
    for backend in ("torch", "tf", "flax"):
        encoder = load_encoder(folder, backend)
        image_embeds = encode_images(encoder, processor.image_processor, images)
        row = {}
        for name, templates in (("single", ("a {}.",)), ("ensemble", TEMPLATE_SETS["shapes"])):
            clf = ZeroShotClassifier(encoder, shapes.class_names, templates, tokenizer=processor.tokenizer)
            row[f"zeroshot_{name}"] = zeroshot_metrics(image_embeds @ clf.weights.T, labels)
        row["retrieval"] = retrieval_by_groups(encoder, processor, shapes, image_embeds)
        pixels = processor.image_processor(images, return_tensors="np")["pixel_values"]
        single = ZeroShotClassifier(encoder, shapes.class_names, ("a {}",), tokenizer=processor.tokenizer)
        for path in ("values", "tokens"):
            row[f"heatmap_{path}"] = heatmap_hit_rate(encoder, pixels, single.weights[labels], masks, path)
        if hasattr(encoder, "relevance_maps"):  # Chefer et al., PyTorch
            from clip_core.encoding import tokenize_texts
            from clip_core.explain import peak_hit_rate

            texts = [f"a {shapes.class_names[c]}" for c in labels]
            ids, mask = tokenize_texts(
                processor.tokenizer, texts, encoder.config.text_config.max_position_embeddings
            )
            row["relevance"] = peak_hit_rate(encoder.relevance_maps(pixels, ids, mask)[0], masks)
        out["backends"][backend] = row
    return out


def evaluate_again(args) -> int:
    """The evaluation of an existing folder (converted to every format first), written into its training.json."""
    from clip_core.conversion import convert
    from clip_core.files import atomic_write_text

    every = tempfile.mkdtemp(prefix="shapes-clip-all-")
    try:
        convert(args.out, os.path.join(every, "all"), formats=("all",), progress=False)
        evaluation = evaluate(os.path.join(every, "all"), args.eval_examples, args.eval_seed)
    finally:
        shutil.rmtree(every, ignore_errors=True)
    record_path = os.path.join(args.out, "training.json")
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    record["evaluation"] = evaluation
    atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
    print(json.dumps(evaluation, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-examples", type=int, default=480)
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="no training: evaluate --out again, update its training.json",
    )
    args = parser.parse_args(argv)

    from clip_core.conversion import convert

    if args.evaluate_only:
        return evaluate_again(args)
    work, record = train(args)
    every = tempfile.mkdtemp(prefix="shapes-clip-all-")
    try:
        convert(work, os.path.join(every, "all"), formats=("all",), progress=False)
        record["evaluation"] = evaluate(os.path.join(every, "all"), args.eval_examples, args.eval_seed)
        staged = os.path.join(every, "safetensors")
        convert(work, staged, formats=("safetensors",), progress=False)
        with open(os.path.join(staged, "training.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        if os.path.isdir(args.out):
            shutil.rmtree(args.out)
        shutil.copytree(staged, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(every, ignore_errors=True)
    print(json.dumps(record["evaluation"], indent=1))
    print(f"wrote {args.out}: {', '.join(sorted(os.listdir(args.out)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
