"""Training speed of clip_flax.training on this machine: examples/s per config, sharded vs one device,
several processes vs one, and the streamed input pipeline alone.

    python -m tools.bench_training [--configs tiny,vit-b-32] [--batch 16] [--steps 3] [--dtype fp32]
        [--loss softmax|sigmoid] [--sharded] [--multihost] [--input] [--out bench_training.json]

For each config: one full train step (forward, gradient-cache-free backward, AdamW update) on a
random batch, compiled once, then the median of ``--steps`` timed steps -> examples/s, and (on a GPU
or TPU) the model FLOPs utilisation against the device's bf16 peak. With ``--sharded`` it also runs
tests/training_sharded_step.py (``-m tests.training_sharded_step``) in a subprocess with 8 simulated
CPU devices and reports the step time on a 2x4 (data x fsdp) mesh against one device (the same 8 CPU
cores' worth of work either way: on a CPU the simulated devices share the cores, so this measures the
sharding overhead, not a speed-up).

``--multihost``: the same step in 2 JAX processes on 127.0.0.1 (jax.distributed, gloo collectives,
``--devices-per-process`` CPU devices each, the global batch split between them) against 1 process
and 1 device, for every config: the cost of the multi-process runtime and its collectives on one
machine (both share its cores).

``--input``: the streamed input alone (clip_flax.data.ShardLoader): webdataset shards of 224 px JPEGs
written to a temporary folder -> device-ready batches (decoded, resized, normalised, tokenised), in
examples/s per host, as host 0 of 1 and of 2 hosts, with the peak RSS over a dataset 4x larger
(memory must not grow with it), each in a fresh process. Compared with the ViT-B/32 step's examples/s
from the same run.

Not a section of tools/bench.py: compiling ViT-B/32's train step alone takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Peak dense bf16 FLOP/s per chip, for MFU (public spec sheets).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "v4": 275e12, "v5e": 197e12,
             "v5p": 459e12, "v6e": 918e12}  # fmt: skip


def train_flops(config, batch: int) -> float:
    """Model FLOPs of one train step: 6 x params x tokens for the matmuls (forward + backward) plus the
    attention scores, 12 x layers x width x sequence^2 per example, for both towers."""
    total = 0.0
    for tower, seq in (
        (config.vision_config, (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1),
        (config.text_config, config.text_config.max_position_embeddings),
    ):
        width, layers = tower.hidden_size, tower.num_hidden_layers
        params = layers * (4 * width * width + 2 * width * tower.intermediate_size)
        total += 6 * params * seq + 12 * layers * width * seq * seq
    return total * batch


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_BF16.items() if k.lower() in kind.lower()), None)


def train_speed(
    config_name: str, batch: int, steps: int, dtype: str, remat: bool = False, loss: str = "softmax"
) -> dict:
    """Examples/s of the train step on every device of this process (or of all processes, when
    jax.distributed was initialised: each process feeds its share of the global batch)."""
    import jax
    import jax.numpy as jnp

    from clip_flax import FlaxCLIPModel
    from clip_flax import training as T
    from tests.tiny_configs import clip_batch

    config = T.CONFIGS[config_name]()
    model = FlaxCLIPModel(
        config, dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32, remat=remat, _do_init=False
    )
    model.params = T.init_params(config, seed=0)
    trainer = T.Trainer(model, T.TrainConfig(learning_rate=1e-4, total_steps=1000, loss=loss))
    state = trainer.init_state()
    rows = batch // jax.process_count()
    local = {k: v[jax.process_index() * rows :][:rows] for k, v in clip_batch(config, batch).items()}
    data = trainer.put_batch(local)
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
    device = jax.devices()[0]
    peak = peak_flops(device)
    return {
        "config": config_name,
        "dtype": dtype,
        "loss_kind": loss,
        "batch": batch,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", ""),
        "first_step_s": round(compile_s, 2),
        "step_s": round(step_s, 4),
        "examples_per_s": round(batch / step_s, 2),
        "mfu": round(train_flops(config, batch) / step_s / (peak * jax.device_count()), 4) if peak else None,
        "loss": float(metrics["loss"]),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multihost_speed(config: str, batch: int, steps: int, dtype: str, processes: int, devices: int) -> dict:
    """``train_speed`` in ``processes`` JAX processes on 127.0.0.1, ``devices`` CPU devices each."""
    port = _free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    procs = []
    try:
        for i in range(processes):
            cmd = [sys.executable, "-m", "tools.bench_training", "--worker", f"127.0.0.1:{port},{processes},{i}",
                   "--configs", config, "--batch", str(batch), "--tiny-batch", str(batch),
                   "--steps", str(steps), "--dtype", dtype]  # fmt: skip
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
        out = [p.communicate(timeout=3600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a bench worker failed: {[p.returncode for p in procs]}")
    return json.loads(out[0].strip().splitlines()[-1])


def _jpeg_shards(folder: str, images: int, per_shard: int, size: int = 224, seed: int = 0) -> str:
    """Shards of ``size`` px JPEGs (smooth colour fields with texture, ~10-20 kB, like resized photos)."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shards = (images + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(os.path.join(folder, f"{s:05d}.tar"), "w") as tar:
            for i in range(s * per_shard, min(images, (s + 1) * per_shard)):
                a, b, c = rng.uniform(0, 255, 3)
                base = np.stack([a * xx, b * yy, c * (1 - xx) * yy], axis=-1)
                pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "JPEG", quality=90)
                for ext, data in (
                    ("jpg", buf.getvalue()),
                    ("txt", f"a photo number {i} of a thing".encode()),
                ):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return os.path.join(folder, f"{{00000..{shards - 1:05d}}}.tar")


def input_speed(
    images: int, batch: int, threads: int | None, hosts: int = 1, steps: int | None = None
) -> dict:
    """Examples/s of ShardLoader on host 0 of ``hosts`` over ``images`` 224 px JPEGs (after one warm-up batch)."""
    from clip_core.config import CLIPConfig
    from clip_core.shards import list_shards
    from clip_flax.data import ShardLoader, make_processor

    processor = make_processor(CLIPConfig())
    with tempfile.TemporaryDirectory() as folder:
        shards = list_shards(_jpeg_shards(folder, images, per_shard=max(8, images // 16)))
        loader = ShardLoader(
            shards, batch, processor, 77, num_streams=2 * hosts, process_count=hosts, threads=threads
        )
        steps = steps or max(3, images // hosts // loader.local_batch_size)
        it = loader.iter_from(0, steps + 1)
        next(it)
        start = time.perf_counter()
        n = sum(len(b["input_ids"]) for _, b in it)
        seconds = time.perf_counter() - start
    return {
        "images": images,
        "hosts": hosts,
        "local_batch": loader.local_batch_size,
        "threads": loader.threads,
        "examples_per_s_per_host": round(n / seconds, 1),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited from the parent)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kb / 1024, 1)


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


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
    parser.add_argument("--loss", choices=["softmax", "sigmoid"], default="softmax")
    parser.add_argument("--sharded", action="store_true", help="also 8 simulated devices vs 1 (subprocess)")
    parser.add_argument("--multihost", action="store_true", help="also 2 processes vs 1 (subprocesses)")
    parser.add_argument("--devices-per-process", type=int, default=1)
    parser.add_argument("--input", action="store_true", help="also the streamed input pipeline alone")
    parser.add_argument("--input-images", type=int, default=1024)
    parser.add_argument("--input-batch", type=int, default=64, help="global batch of the input benchmark")
    parser.add_argument("--threads", type=int, help="decoding threads of the input benchmark")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # coordinator,processes,id: one multihost worker
    parser.add_argument("--input-worker", help=argparse.SUPPRESS)  # images,hosts: one input benchmark
    parser.add_argument("--out", default="bench_training.json")
    args = parser.parse_args(argv)

    if args.input_worker:
        images, hosts = (int(x) for x in args.input_worker.split(","))
        print(json.dumps(input_speed(images, args.input_batch, args.threads, hosts)), flush=True)
        return 0
    if args.worker:
        import jax

        coordinator, processes, index = args.worker.split(",")
        jax.distributed.initialize(coordinator, int(processes), int(index))
        name = args.configs.split(",")[0]
        steps = args.steps if name != "tiny" else max(args.steps, 10)
        print(json.dumps(train_speed(name, args.batch, steps, args.dtype, loss=args.loss)), flush=True)
        return 0

    print(f"machine: {_load()} at the start", flush=True)
    rows = []
    for name in [c for c in args.configs.split(",") if c]:
        batch = args.tiny_batch if name == "tiny" else args.batch
        steps = args.steps if name != "tiny" else max(args.steps, 10)
        row = train_speed(name, batch, steps, args.dtype, loss=args.loss)
        mfu = f"; MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
        print(
            f"{name:<10} {row['dtype']} batch {batch:>4} on 1 process, {row['devices']} {row['platform']} "
            f"device(s): {row['examples_per_s']:>8.1f} examples/s ({row['step_s'] * 1000:.0f} ms/step; first "
            f"step incl. compile {row['first_step_s']:.0f} s{mfu})",
            flush=True,
        )
        rows.append(row)
        if args.multihost:
            multi = multihost_speed(name, batch, steps, args.dtype, 2, args.devices_per_process)
            multi["ratio_to_one_process"] = round(multi["examples_per_s"] / row["examples_per_s"], 3)
            print(
                f"{name:<10} {row['dtype']} batch {batch:>4} on 2 processes x {args.devices_per_process} CPU "
                f"device(s): {multi['examples_per_s']:>8.1f} examples/s ({multi['ratio_to_one_process']:.2f}x "
                f"the single process)",
                flush=True,
            )
            rows.append(multi)
    out = {"train": rows}
    if args.input:
        out["input"] = []
        for images, hosts in ((args.input_images, 1), (args.input_images, 2), (4 * args.input_images, 1)):
            # A fresh process each: its peak RSS is the loader's alone.
            cmd = [sys.executable, "-m", "tools.bench_training", "--input-worker", f"{images},{hosts}",
                   "--input-batch", str(args.input_batch)] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"input: {images} 224 px JPEGs, host 0 of {hosts}, {row['threads']} decode threads: "
                f"{row['examples_per_s_per_host']:.1f} examples/s per host (local batch "
                f"{row['local_batch']}); peak RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            out["input"].append(row)
        step = next((r for r in rows if r["config"] == "vit-b-32" and r["processes"] == 1), None)
        if step is not None:
            ratio = out["input"][0]["examples_per_s_per_host"] / step["examples_per_s"]
            out["input_over_vit_b_32_step"] = round(ratio, 2)
            print(f"input / ViT-B/32 train step on this host: {ratio:.1f}x", flush=True)
    print(f"machine: {_load()} at the end", flush=True)
    out["machine"] = _load()
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
