"""One training step on a ("data", "fsdp") mesh of simulated CPU devices against the same step on one device.

Run as a subprocess (the device count is fixed when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.training_sharded_step [--mesh 2x4 ...]

from the repo root.

Prints one JSON object: the largest parameter and loss differences per mesh, whether parameters were
really split along "fsdp", and step times (``--time N`` repeats the step N times to time it).

``--sigmoid`` checks the chunked sigmoid loss instead: on each mesh, its value and gradients (w.r.t.
both embeddings, logit_scale and logit_bias) against the unchunked loss on one device, and the
collectives in its compiled program (texts passed around with collective-permutes, never gathered).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from clip_core.config import CLIPConfig
from clip_flax import FlaxCLIPModel
from clip_flax.training import (
    TrainConfig,
    Trainer,
    batch_sharding,
    chunked_sigmoid_loss,
    init_params,
    make_mesh,
    sigmoid_loss,
    tiny_config,
)
from tests.tiny_configs import clip_batch, clip_config


def one_step(model, cfg, mesh, batch, repeats: int = 0):
    trainer = Trainer(model, cfg, mesh, donate=False)
    state = trainer.init_state()
    new_state, metrics = trainer.step(state, batch)
    params = jax.device_get(new_state.params)
    seconds = None
    if repeats:
        global_batch = trainer.put_batch(batch)
        jax.block_until_ready(trainer.step(state, global_batch))
        start = time.perf_counter()
        for _ in range(repeats):
            out = trainer.step(state, global_batch)
        jax.block_until_ready(out)
        seconds = (time.perf_counter() - start) / repeats
    kernel = new_state.params["text_model"]["encoder"]["layers"]["0"]["mlp"]["fc1"]["kernel"]
    return params, float(metrics["loss"]), seconds, str(kernel.sharding.spec)


def sigmoid_check(mesh, batch: int = 16, dim: int = 8) -> dict:
    """Chunked sigmoid loss on ``mesh`` vs the unchunked one on one device: value, gradients, collectives."""
    rng = np.random.default_rng(0)
    text, image = (rng.normal(size=(batch, dim)).astype(np.float32) for _ in range(2))
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    image /= np.linalg.norm(image, axis=-1, keepdims=True)
    image[:4] = text[:4]  # a few matching pairs: positives with large logits
    scalars = (np.float32(np.log(10.0)), np.float32(-3.0))
    on_one = jax.device_put((text, image, *scalars), jax.devices()[0])
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(sigmoid_loss, argnums=(0, 1, 2, 3)))(*on_one)
    chunked = jax.jit(
        jax.value_and_grad(lambda t, i, s, b: chunked_sigmoid_loss(t, i, s, b, mesh), argnums=(0, 1, 2, 3))
    )
    sharded = [jax.device_put(x, batch_sharding(mesh)) for x in (text, image)]
    loss, grads = chunked(*sharded, *scalars)
    hlo = chunked.lower(*sharded, *scalars).compile().as_text()
    return {
        "loss": float(ref_loss),
        "loss_diff": abs(float(loss) - float(ref_loss)),
        "grad_diffs": [
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(grads, ref_grads)
        ],
        "grad_norms": [float(np.max(np.abs(np.asarray(b)))) for b in ref_grads],
        "collective_permutes": hlo.count("collective-permute("),
        "all_gathers": hlo.count("all-gather("),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="micro", choices=["micro", "tiny", "vit-b-32"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--mesh", action="append", default=[], help="DATAxFSDP[:ACCUM], e.g. 2x4 or 2x4:2 (repeatable)"
    )
    parser.add_argument("--time", type=int, default=0, help="also time N steps per mesh")
    parser.add_argument("--sigmoid", action="store_true", help="check the chunked sigmoid loss instead")
    args = parser.parse_args(argv)
    if args.sigmoid:
        meshes = [tuple(int(x) for x in name.split("x")) for name in args.mesh or ["2x2"]]
        out = {f"{d}x{f}": sigmoid_check(make_mesh(d, f, jax.devices()[: d * f])) for d, f in meshes}
        print(json.dumps({"devices": jax.device_count(), "sigmoid": out}))
        return 0

    config = {"micro": lambda: clip_config("micro"), "tiny": tiny_config, "vit-b-32": CLIPConfig}[
        args.config
    ]()
    model = FlaxCLIPModel(config, _do_init=False)
    model.params = init_params(config, seed=0)
    batch = clip_batch(config, args.batch)

    def train_config(accum: int = 1) -> TrainConfig:
        return TrainConfig(learning_rate=1e-3, total_steps=10, weight_decay=0.1, accum_steps=accum)

    one_device = make_mesh(1, 1, jax.devices()[:1])
    ref, ref_loss, ref_time, _ = one_step(model, train_config(), one_device, batch, args.time)
    out = {"devices": jax.device_count(), "one_device_step_s": ref_time, "loss": ref_loss, "meshes": {}}
    for name in args.mesh or ["2x4"]:
        shape, _, accum = name.partition(":")
        data, fsdp = (int(x) for x in shape.split("x"))
        mesh = make_mesh(data, fsdp)
        params, loss, seconds, spec = one_step(model, train_config(int(accum or 1)), mesh, batch, args.time)
        diffs = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), params, ref)
        out["meshes"][name] = {
            "max_param_diff": max(jax.tree_util.tree_leaves(diffs)),
            "loss_diff": abs(loss - ref_loss),
            "step_s": seconds,
            "fc1_kernel_spec": spec,
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
