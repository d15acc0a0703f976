"""Training speed of clip_flax.training on this machine: examples/s per config, and sharded vs one device.

    python -m tools.bench_training [--configs tiny,vit-b-32] [--batch 16] [--steps 3] [--dtype fp32]
        [--sharded] [--out bench_training.json]

For each config: one full train step (forward, gradient-cache-free backward, AdamW update) on a
random batch, compiled once, then the median of ``--steps`` timed steps -> examples/s. With
``--sharded`` it also runs tests/training_sharded_step.py (``-m tests.training_sharded_step``) in a subprocess with 8 simulated CPU devices
and reports the step time on a 2x4 (data x fsdp) mesh against one device (the same 8 CPU cores'
worth of work either way: on a CPU the simulated devices share the cores, so this measures the
sharding overhead, not a speed-up).

Not a section of tools/bench.py: compiling ViT-B/32's train step alone takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_speed(config_name: str, batch: int, steps: int, dtype: str, remat: bool = False) -> dict:
    import jax
    import jax.numpy as jnp

    from clip_flax import FlaxCLIPModel
    from clip_flax import training as T
    from tests.training_sharded_step import random_batch

    config = T.CONFIGS[config_name]()
    model = FlaxCLIPModel(
        config, dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32, remat=remat, _do_init=False
    )
    model.params = T.init_params(config, seed=0)
    trainer = T.Trainer(model, T.TrainConfig(learning_rate=1e-4, total_steps=1000))
    state = trainer.init_state()
    data = trainer.put_batch(random_batch(config, batch))
    start = time.perf_counter()
    state, metrics = trainer.step(state, data)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = trainer.step(state, data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "config": config_name,
        "dtype": dtype,
        "batch": batch,
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "first_step_s": round(compile_s, 2),
        "step_s": round(step_s, 4),
        "examples_per_s": round(batch / step_s, 2),
        "loss": float(metrics["loss"]),
    }


def sharded_vs_one(batch: int, steps: int, config: str = "tiny") -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        "-m",
        "tests.training_sharded_step",
        "--config",
        config,
        "--batch",
        str(batch),
        "--mesh",
        "2x4",
        "--mesh",
        "8x1",
        "--time",
        str(steps),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return {"config": config, "batch": batch, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="tiny,vit-b-32")
    parser.add_argument("--batch", type=int, default=16, help="batch for ViT-B/32 (tiny uses --tiny-batch)")
    parser.add_argument("--tiny-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--sharded", action="store_true", help="also 8 simulated devices vs 1 (subprocess)")
    parser.add_argument("--out", default="bench_training.json")
    args = parser.parse_args(argv)

    rows = []
    for name in [c for c in args.configs.split(",") if c]:
        batch = args.tiny_batch if name == "tiny" else args.batch
        row = train_speed(name, batch, args.steps if name != "tiny" else max(args.steps, 10), args.dtype)
        print(
            f"{name:<10} {row['dtype']} batch {batch:>4}: {row['examples_per_s']:>8.1f} examples/s "
            f"({row['step_s'] * 1000:.0f} ms/step; first step incl. compile {row['first_step_s']:.0f} s)",
            flush=True,
        )
        rows.append(row)
    out = {"train": rows}
    if args.sharded:
        sharded = sharded_vs_one(64, 10)
        one = sharded["one_device_step_s"]
        for name, mesh in sharded["meshes"].items():
            print(
                f"tiny batch 64, mesh {name} on 8 simulated CPU devices: {mesh['step_s'] * 1000:.1f} ms/step "
                f"vs {one * 1000:.1f} ms on 1 device ({mesh['step_s'] / one:.2f}x); "
                f"max param diff {mesh['max_param_diff']:.1e}",
                flush=True,
            )
        out["sharded"] = sharded
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
