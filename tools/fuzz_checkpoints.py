"""A seeded corruption fuzz of checkpoint folders: each of the four weight formats (and sharded
safetensors / pytorch_model.bin folders), corrupted N times, through every loader.

    python -m tools.fuzz_checkpoints --cases 500 [--formats safetensors tf] [--seed 0]

Prints, per format and loader: cases tried, clean loads, clear refusals (CheckpointError /
ConfigError naming the file) and bad outcomes (any other exception type, or an error that names no
file), then the first bad outcomes. ``verify`` is load_state_dict(verify=True): every changed file must
be refused (load_pretrained(verify=True): config.json too). tests/test_hardening_readers.py runs the
same fuzz with a few dozen cases per format.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import numpy as np

FILES = {
    "safetensors": "model.safetensors",
    "pytorch": "pytorch_model.bin",
    "tf": "tf_model.h5",
    "flax": "flax_model.msgpack",
}
KINDS = ["flip_head", "flip_tail", "flip_any", "truncate", "zero_run", "random_run", "insert"]
# A small model with many tensors (the one tests/fault_child.py saves): small files, many headers.
_TOWER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
CONFIG = {
    "text_config": dict(_TOWER, vocab_size=64, max_position_embeddings=8, bos_token_id=62, eos_token_id=63),
    "vision_config": dict(_TOWER, image_size=16, patch_size=8),
    "projection_dim": 8,
}


def formats_here() -> list[str]:
    names = list(FILES)
    if importlib.util.find_spec("torch") is None:
        names.remove("pytorch")
    return names


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded corruption; headers and tails (where the structure is) are hit more often."""
    data = bytearray(data)
    n = len(data)
    kind = str(rng.choice(KINDS))
    if kind.startswith("flip"):
        span = {"flip_head": (0, min(n, 600)), "flip_tail": (max(0, n - 600), n), "flip_any": (0, n)}[kind]
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(*span))] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        data = data[: int(rng.integers(0, n))]
    elif kind in ("zero_run", "random_run"):
        start = int(rng.integers(0, n))
        length = int(rng.integers(1, 64))
        fill = bytes(length) if kind == "zero_run" else rng.bytes(length)
        data[start : start + length] = fill[: n - start]
    else:
        at = int(rng.integers(0, n))
        data[at:at] = rng.bytes(int(rng.integers(1, 16)))
    return kind, bytes(data)


def _eager(folder):
    from clip_core.weights import load_state_dict

    return load_state_dict(folder)


def _lazy(folder):
    from clip_core.formats import open_checkpoint

    with open_checkpoint(folder) as reader:
        return {name: reader.info(name) for name in reader}


def _conversion(folder):
    from clip_core.conversion import open_source

    src = open_source(folder)
    with src.reader:
        return {name: src.reader[name] for name in src.names}


def _model(folder):
    from clip_core.pretrained import load_pretrained

    return load_pretrained(folder, "clip")[1]


LOADERS = {"eager": _eager, "lazy": _lazy, "conversion": _conversion, "model": _model}


def build(root: str) -> tuple[dict[str, tuple[str, list[str]]], dict]:
    """A folder per format (config + weights, as save_pretrained writes them), sharded ones too."""
    from clip_core.config import CLIPConfig
    from clip_core.pretrained import save_pretrained
    from clip_core.weights import random_state

    config = CLIPConfig.from_dict(json.loads(json.dumps(CONFIG)))
    state = random_state(config, seed=1)
    folders = {}
    for fmt in formats_here():
        folder = os.path.join(root, fmt)
        save_pretrained(folder, config, state, formats=(fmt,))
        folders[fmt] = (folder, [FILES[fmt]])
        if fmt in ("safetensors", "pytorch"):
            sharded = os.path.join(root, f"{fmt}-sharded")
            save_pretrained(sharded, config, state, formats=(fmt,), max_shard_size=6000)
            weights = sorted(n for n in os.listdir(sharded) if n not in ("config.json", "checksums.sha256"))
            folders[f"{fmt}-sharded"] = (sharded, weights)
    return folders, state


def _outcome(call, names: list[str]) -> tuple[str, str]:
    """("loaded" | "refused" | "bad", detail)."""
    from clip_core.config import ConfigError
    from clip_core.names import CheckpointError

    try:
        call()
        return "loaded", ""
    except (CheckpointError, ConfigError) as e:
        if any(n in str(e) for n in names):
            return "refused", ""
        return "bad", f"names no file: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - any other type is what the fuzz looks for
        return "bad", f"{type(e).__name__}: {e}"


def run(fmt: str, folders: dict, state: dict, cases: int, work: str, seed: int = 0):
    """Counts {loader: Counter(loaded / refused / bad)} and the bad outcomes, for ``cases`` corruptions
    (one in six of config.json, the others of a weights file, an index or a shard)."""
    from clip_core.names import CheckpointError
    from clip_core.pretrained import load_pretrained

    source, names = folders[fmt]
    files = sorted(os.listdir(source))
    rng = np.random.default_rng([seed, sum(map(ord, fmt))])
    counts = {name: collections.Counter() for name in [*LOADERS, "verify"]}
    bad = []
    for case in range(cases):
        folder = os.path.join(work, f"{fmt}-{case}")
        shutil.copytree(source, folder)
        target = "config.json" if rng.random() < 1 / 6 else names[int(rng.integers(len(names)))]
        original = open(os.path.join(source, target), "rb").read()
        kind, data = mutate(original, rng)
        with open(os.path.join(folder, target), "wb") as f:
            f.write(data)
        what = f"{fmt} case {case} ({kind} of {target})"
        for loader_name, loader in LOADERS.items():
            result, detail = _outcome(lambda: loader(folder), files)  # noqa: B023
            counts[loader_name][result] += 1
            if result == "bad":
                bad.append(f"{loader_name}: {what}: {detail}")
        try:  # verify=True: every changed file is refused, whatever the format checks itself
            loaded = load_pretrained(folder, "clip", verify=True)[1]
            same = set(loaded) == set(state) and all(np.array_equal(loaded[k], state[k]) for k in state)
            result = "loaded" if data == original and same else "bad"
            detail = "" if result == "loaded" else "verify=True accepted a changed file"
        except CheckpointError as e:
            result, detail = (
                ("refused", "") if data != original else ("bad", f"refused an unchanged file: {e}")
            )
        except Exception as e:  # noqa: BLE001
            result, detail = "bad", f"{type(e).__name__}: {e}"
        counts["verify"][result] += 1
        if result == "bad":
            bad.append(f"verify: {what}: {detail}")
        shutil.rmtree(folder)
    return counts, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=200, help="corruptions per format")
    parser.add_argument("--formats", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        folders, state = build(os.path.join(root, "originals"))
        total_bad = []
        print(f"{'format':22} {'loader':11} {'tried':>6} {'loaded':>7} {'refused':>8} {'bad':>5}")
        for fmt in args.formats or list(folders):
            counts, bad = run(fmt, folders, state, args.cases, root, args.seed)
            for loader, c in counts.items():
                print(
                    f"{fmt:22} {loader:11} {sum(c.values()):6} {c['loaded']:7} {c['refused']:8} {c['bad']:5}"
                )
            total_bad += bad
    print(f"{len(total_bad)} bad outcomes")
    kinds = collections.Counter(
        f"{line.split(':')[0]}: {line.split('): ', 1)[-1].split(':')[0]}" for line in total_bad
    )
    for kind, count in kinds.most_common():
        print(f"  {count:5}  {kind}")
    shown = {}
    for line in total_bad:
        shown.setdefault(line.split("): ", 1)[-1][:60], line)
    for line in list(shown.values())[:30]:
        print("  " + line[:300])
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
