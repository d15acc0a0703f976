"""ViT-B/16 image throughput and MFU on a GPU: clip_torch bf16 and clip_flax bf16.

    python -m tools.bench_gpu [--batch 256] [--steps 20] [--out bench_gpu.json]   (from the repo root)

Random ViT-B/16-shaped weights; ``get_image_features`` at 224 px in bfloat16 (torch: the model cast
to bf16, sdpa attention, then ``torch.compile``; Flax: ``dtype=jnp.bfloat16`` compute, params in
fp32, under jax.jit). MFU = achieved FLOP/s / the GPU's peak dense bf16 FLOP/s (a table of known
GPUs below, or ``--peak-tflops``). With no GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

# Peak dense bf16 tensor-core TFLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
    "L40S": 362.0,
    "V100": 125.0,
}


def vit_b16_config():
    from clip_core.config import CLIPConfig

    return CLIPConfig(vision_config=dict(patch_size=16, image_size=224))


def image_gflop(config) -> float:
    """Forward GFLOP per image of the vision tower + projection (2 per multiply-add)."""
    v = config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    width, mlp, layers = v.hidden_size, v.intermediate_size, v.num_hidden_layers
    patch = 2 * (tokens - 1) * (3 * v.patch_size**2) * width
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    return (patch + layers * per_layer + 2 * width * config.projection_dim) / 1e9


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def _timed(fn, steps: int) -> float:
    fn()
    fn()  # compile, warm up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def torch_row(config, state, batch: int, steps: int) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from clip_torch import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(config.vision_config)  # projection_dim 512, as the CLIPConfig
    model.load_canonical_state(
        {k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection"))}
    )
    model = model.to("cuda", torch.bfloat16).eval()
    pixels = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(model)

    def step():
        with torch.inference_mode():
            compiled(pixel_values=pixels).image_embeds.float().sum().item()

    return {
        "backend": "clip_torch bf16 (torch.compile)",
        "device": torch.cuda.get_device_name(),
        "seconds": _timed(step, steps),
    }


def flax_row(config, state, batch: int, steps: int) -> dict | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        return None
    from clip_flax import FlaxCLIPModel

    model = FlaxCLIPModel(config, dtype=jnp.bfloat16, _do_init=False)
    model.load_canonical_state(state)
    params = jax.device_put(model.params, gpus[0])
    pixels = jax.device_put(
        jnp.asarray(np.random.default_rng(0).normal(size=(batch, 3, 224, 224)), jnp.float32), gpus[0]
    )
    fn = jax.jit(lambda p, x: model.get_image_features(x, params=p))

    def step():
        fn(params, pixels).block_until_ready()

    return {
        "backend": "clip_flax bf16 compute (jit)",
        "device": gpus[0].device_kind,
        "seconds": _timed(step, steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak dense bf16 TFLOP/s")
    parser.add_argument("--out", default="bench_gpu.json")
    args = parser.parse_args(argv)

    from clip_core.weights import random_state

    config = vit_b16_config()
    state = random_state(config, seed=0)
    gflop = image_gflop(config)
    rows = [
        r
        for r in (
            torch_row(config, state, args.batch, args.steps),
            flax_row(config, state, args.batch, args.steps),
        )
        if r
    ]
    if not rows:
        print("bench_gpu: no GPU found (torch.cuda and jax see none): nothing to measure")
        return 0
    print(f"ViT-B/16 image features, 224 px, batch {args.batch}: {gflop:.2f} GFLOP per image")
    for row in rows:
        row["images_per_second"] = args.batch / row["seconds"]
        peak = peak_tflops(row["device"], args.peak_tflops)
        row["mfu"] = row["images_per_second"] * gflop / 1e3 / peak if peak else None
        mfu = (
            f"{100 * row['mfu']:.1f}% MFU of {peak:.0f} TFLOP/s"
            if peak
            else "MFU: peak unknown (--peak-tflops)"
        )
        print(f"{row['backend']:32s} {row['device']}: {row['images_per_second']:,.0f} img/s, {mfu}")
    with open(args.out, "w") as f:
        json.dump({"batch": args.batch, "gflop_per_image": gflop, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
