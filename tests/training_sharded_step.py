"""One training step on a ("data", "fsdp") mesh of simulated CPU devices against the same step on one device.

Run as a subprocess (the device count is fixed when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.training_sharded_step [--mesh 2x4 ...]

from the repo root.

Prints one JSON object: the largest parameter and loss differences per mesh, whether parameters were
really split along "fsdp", and step times (``--time N`` repeats the step N times to time it).
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
from clip_flax.training import TrainConfig, Trainer, init_params, make_mesh, tiny_config
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="micro", choices=["micro", "tiny", "vit-b-32"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--mesh", action="append", default=[], help="DATAxFSDP[:ACCUM], e.g. 2x4 or 2x4:2 (repeatable)"
    )
    parser.add_argument("--time", type=int, default=0, help="also time N steps per mesh")
    args = parser.parse_args(argv)

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
