"""Side-by-side speed of our backends and transformers', on the same weights, inputs and machine.

    python -m tools.bench [--quick] [--only torch,tf,race] [--compile] [--out bench.json]   (repo root)

Every section builds its model from the same random ViT-B/32-shaped weights (fixed seed), times a
warm-up and then the median of several runs, and reports ours and theirs from the same run as a
ratio. The fp32 matmul rate measured first with every framework installed (numpy, torch, TF, XLA,
jax, ONNX Runtime; the highest is the machine's ceiling) tells how far each number is from the
machine's limit ("of peak"); the "race" section (tools/bench_race.py) puts every backend's CPU
paths against ONNX Runtime. The load average before and after goes into the JSON: on a shared
machine, rerun when it is quiet.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from clip_core.config import CLIPConfig
from clip_core.weights import random_state

GFLOP_PER_IMAGE = 8.82  # ViT-B/32 at 224 px (CLIP-FACTS.md)
GFLOP_PER_TEXT = 5.96  # ViT-B/32 text tower at 77 tokens
BATCH = 8
SEED = 0

# Each module exposes rows(ctx) -> list of row dicts (see BenchContext). Listed here, in report order.
SECTIONS = {
    "transformers": "tools.bench_transformers",
    "torch": "tools.bench_torch",
    "tf": "tools.bench_tf",
    "flax": "tools.bench_flax",
    "tokenizers": "tools.bench_tokenizers",
    "image": "tools.bench_image",
    "race": "tools.bench_race",
}


@dataclasses.dataclass
class BenchContext:
    config: CLIPConfig
    state: dict[str, np.ndarray]
    pixel_values: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    batch: int = BATCH
    quick: bool = False
    compile: bool = False  # also time torch.compile (minutes of compiling on a small CPU)

    def time(self, fn: Callable[[], object], warmup: int = 2, runs: int = 5) -> float:
        """Median seconds of one call of ``fn`` after ``warmup`` untimed calls."""
        if self.quick:
            warmup, runs = 1, 2
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def interleaved(self, fns: dict, rounds: int, warm_once: bool = False, **time_kwargs) -> dict:
        """Median over rounds of ``self.time`` for each fn, alternating between them every round,
        so that load from other processes hits ours and theirs alike."""
        if warm_once:
            for fn in fns.values():
                fn()
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name].append(self.time(fn, **time_kwargs))
        return {name: statistics.median(values) for name, values in times.items()}


def speed_row(section, what, ours_name, ours_seconds, theirs_name, theirs_seconds, batch) -> dict:
    """One table row: throughput of ours and theirs from seconds per batch."""
    return {
        "section": section,
        "what": what,
        "ours": ours_name,
        "theirs": theirs_name,
        "unit": "img/s" if what.startswith("image") else "texts/s",
        "ours_value": batch / ours_seconds,
        "theirs_value": batch / theirs_seconds if theirs_seconds else None,
    }


def random_text_batch(
    config: CLIPConfig, batch: int = BATCH, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of captions of varied length, each ending in <|endoftext|>, padded to the context length."""
    t = config.text_config
    rng = np.random.default_rng(seed + 1)
    length = t.max_position_embeddings
    ids = np.full((batch, length), t.eos_token_id, np.int64)
    mask = np.zeros((batch, length), np.int64)
    for i in range(batch):
        n = int(rng.integers(6, length + 1))
        ids[i, 0] = t.bos_token_id
        ids[i, 1 : n - 1] = rng.integers(0, t.bos_token_id, n - 2)
        mask[i, :n] = 1
    return ids, mask


def make_context(quick: bool = False) -> BenchContext:
    config = CLIPConfig()
    rng = np.random.default_rng(SEED + 2)
    ids, mask = random_text_batch(config)
    pixels = rng.normal(0.0, 1.0, (BATCH, 3, 224, 224)).astype(np.float32)
    return BenchContext(config, random_state(config, seed=SEED), pixels, ids, mask, quick=quick)


def matmul_gflops(n: int = 2048, runs: int = 5) -> dict[str, float]:
    """fp32 matmul throughput (n x n) in every framework installed, and bf16 where torch has it: the
    machine's ceiling for these models is the highest fp32 figure, whichever library reaches it."""
    out = {}
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flop = 2 * n**3
    out["numpy_fp32"] = flop / _best_of(lambda: a @ a, runs) / 1e9
    for name, make in MATMULS.items():
        try:
            fn = make(a)
        except ImportError:
            continue
        out[f"{name}_fp32"] = flop / _best_of(fn, runs) / 1e9
    try:
        import torch

        # bf16 small and once: on CPUs without AVX512-BF16/AMX it runs at ~1 GFLOP/s.
        nb = 256
        tb = torch.from_numpy(a[:nb, :nb]).to(torch.bfloat16)
        out["torch_bf16"] = 2 * nb**3 / _best_of(lambda: tb @ tb, 1) / 1e9
    except ImportError:
        pass
    return out


def _torch_matmul(a):
    import torch

    t = torch.from_numpy(a)
    return lambda: t @ t


def _tf_matmul(a, jit: bool = False):
    import tensorflow as tf

    x = tf.constant(a)
    fn = tf.function(lambda m: tf.matmul(m, m), jit_compile=jit)
    return lambda: fn(x).numpy()


def _jax_matmul(a):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(a)
    fn = jax.jit(lambda m: m @ m)
    return lambda: fn(x).block_until_ready()


def _ort_matmul(a):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = a.shape[0]
    spec = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("A", "Y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "A"], ["Y"])], "matmul", spec[:1], spec[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a})


MATMULS = {
    "torch": _torch_matmul,
    "tf": _tf_matmul,
    "tf_xla": lambda a: _tf_matmul(a, jit=True),
    "jax": _jax_matmul,
    "onnxruntime": _ort_matmul,
}


def _best_of(fn: Callable[[], object], runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gflop_per_item(row: dict) -> float | None:
    return (
        {"img/s": GFLOP_PER_IMAGE, "texts/s": GFLOP_PER_TEXT}.get(row.get("unit"))
        if "features" in row.get("what", "")
        else None
    )


def finish_row(row: dict, fp32_limit: float) -> dict:
    ours, theirs = row.get("ours_value"), row.get("theirs_value")
    row["ratio"] = ours / theirs if ours and theirs else None
    per_item = gflop_per_item(row)
    if per_item and fp32_limit:
        for side in ("ours", "theirs"):
            value = row.get(f"{side}_value")
            row[f"{side}_fraction_of_fp32_matmul"] = value * per_item / fp32_limit if value else None
    return row


def print_table(rows: list[dict]) -> None:
    def number(value, spec):
        return format(value, spec) if value else "-"

    table = [("section", "what", "ours", "value", "theirs", "value", "ratio", "unit", "of peak")]
    for r in rows:
        table.append(
            (
                r["section"],
                r["what"],
                r.get("ours") or "-",
                number(r.get("ours_value"), ".1f"),
                r.get("theirs") or "-",
                number(r.get("theirs_value"), ".1f"),
                number(r.get("ratio"), ".2f") + ("x" if r.get("ratio") else ""),
                r["unit"],
                number(
                    r.get("ours_fraction_of_fp32_matmul") and 100 * r["ours_fraction_of_fp32_matmul"], ".0f"
                )
                + ("%" if r.get("ours_fraction_of_fp32_matmul") else ""),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    numeric = {3, 5, 6, 8}
    lines = [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))
        )
        for row in table
    ]
    print(lines[0].rstrip())
    print("-" * max(map(len, lines)))
    for line in lines[1:]:
        print(line.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer timed runs (a smoke test, not a measurement)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument("--out", default="bench.json", help="where to write the table as JSON")
    parser.add_argument(
        "--compile", action="store_true", help="race: also time torch.compile (slow to compile)"
    )
    args = parser.parse_args(argv)

    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")

    load_before = os.getloadavg()
    limits = matmul_gflops()
    best = max((k for k in limits if k.endswith("fp32")), key=limits.get)
    fp32_limit = limits[best]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"load average before: {load_before[0]:.1f} (1 min), {load_before[1]:.1f} (5 min)")
    print("matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in limits.items()))
    print(
        f"ceiling: {best} {fp32_limit:.0f} GFLOP/s; "
        f"ViT-B/32: {GFLOP_PER_IMAGE} GFLOP/image -> fp32 ceiling {fp32_limit / GFLOP_PER_IMAGE:.1f} img/s; "
        f"{GFLOP_PER_TEXT} GFLOP/text -> {fp32_limit / GFLOP_PER_TEXT:.1f} texts/s\n"
    )

    ctx = make_context(quick=args.quick)
    ctx.compile = args.compile
    rows: list[dict] = []
    for section, module_name in SECTIONS.items():
        if only and section not in only:
            continue
        try:
            module = importlib.import_module(module_name)
            section_rows = module.rows(ctx)
        except ImportError as e:
            print(f"[{section}] skipped: {e}", file=sys.stderr)
            continue
        rows.extend(finish_row(r, fp32_limit) for r in section_rows)
        print_table(section_rows)
        print()

    print_table(rows)
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.1f} (1 min), {load_after[1]:.1f} (5 min)")
    with open(args.out, "w") as f:
        report = {"matmul_gflops": limits, "ceiling": best, "batch": BATCH, "rows": rows}
        json.dump({**report, "load_average": {"before": load_before, "after": load_after}}, f, indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
