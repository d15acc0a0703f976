"""The CPU speed race: every backend's CPU paths against ONNX Runtime on the same weights and inputs.

    python -m tools.bench --only race [--compile]       (from the repo root)

Paths, each timed interleaved with the others in this one process (so that load from other
processes hits all alike), each checked to give the torch eager features within 1e-4:

- torch eager (``get_*_features`` under inference_mode: what TorchEncoder ran before);
- torch eager with oneDNN linears (clip_torch.fast: what TorchEncoder runs now);
- torch ``jit.trace`` + ``jit.freeze`` + ``optimize_for_inference`` (folds the weights; tried as a
  way to oneDNN, but it leaves these Linear layers on MKL: no faster, kept as a measured attempt);
- torch ``torch.compile`` (inductor, weights frozen; only with ``--compile``: minutes to compile);
- TF ``tf.function`` and ``tf.function(jit_compile=True)`` (XLA);
- Flax ``jax.jit``;
- ONNX Runtime on clip_torch's ONNX export (clip_core.onnx_engine.OnnxCLIP: all graph
  optimisations, intra-op threads = cores, no spinning).

Rows compare each path with ONNX Runtime (the ratio column) and, through tools.bench, with the
machine's best fp32 matmul rate; one "best CPU path" row per backend takes its fastest path.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from tools.bench import speed_row

SECTION = "race"
ORT = "ONNX Runtime (same weights)"
EQUAL = 1e-4  # max abs difference from torch eager for a path to count


def _torch_paths(ctx, compile_inductor: bool) -> dict:
    import torch

    from clip_torch import CLIPModel
    from clip_torch.export import TextFeatures, VisionFeatures
    from clip_torch.fast import onednn_linears

    with torch.device("meta"):
        model = CLIPModel(ctx.config)
    model.load_canonical_state(ctx.state)
    model.eval()
    pixels = torch.from_numpy(ctx.pixel_values)
    ids, mask = torch.from_numpy(ctx.input_ids), torch.from_numpy(ctx.attention_mask)

    def no_grad(fn):
        def run():
            with torch.inference_mode():
                return fn().numpy()

        return run

    fast = onednn_linears(model)
    paths = {
        "torch eager": (
            no_grad(lambda: model.get_image_features(pixel_values=pixels)),
            no_grad(lambda: model.get_text_features(input_ids=ids, attention_mask=mask)),
        ),
        "torch eager, oneDNN linears (TorchEncoder)": (
            no_grad(lambda: fast.get_image_features(pixel_values=pixels)),
            no_grad(lambda: fast.get_text_features(input_ids=ids, attention_mask=mask)),
        ),
    }
    with torch.no_grad():
        vision = torch.jit.trace(VisionFeatures(model).eval(), (pixels,), check_trace=False)
        text = torch.jit.trace(TextFeatures(model).eval(), (ids, mask), check_trace=False)
        vision = torch.jit.optimize_for_inference(torch.jit.freeze(vision))
        text = torch.jit.optimize_for_inference(torch.jit.freeze(text))
    paths["torch jit.trace + freeze + optimize_for_inference"] = (
        no_grad(lambda: vision(pixels)),
        no_grad(lambda: text(ids, mask)),
    )
    if compile_inductor:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        vision_c = torch.compile(VisionFeatures(model).eval(), backend="inductor")
        text_c = torch.compile(TextFeatures(model).eval(), backend="inductor")
        paths["torch.compile (inductor, frozen)"] = (
            no_grad(lambda: vision_c(pixels)),
            no_grad(lambda: text_c(ids, mask)),
        )
    return paths


def _tf_paths(ctx) -> dict:
    import tensorflow as tf

    from clip_tf import TFCLIPModel

    model = TFCLIPModel(ctx.config, _do_init=False)
    model.load_canonical_state(ctx.state)
    pixels = tf.constant(ctx.pixel_values)
    ids, mask = tf.constant(ctx.input_ids), tf.constant(ctx.attention_mask)
    paths = {}
    for name, jit in (("TF tf.function", False), ("TF XLA", True)):
        image = tf.function(lambda p: model.get_image_features(pixel_values=p), jit_compile=jit)
        text = tf.function(
            lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=jit
        )
        paths[name] = (
            lambda image=image: image(pixels).numpy(),
            lambda text=text: text(ids, mask).numpy(),
        )
    return paths


def _flax_paths(ctx) -> dict:
    import jax
    import jax.numpy as jnp

    from clip_flax import FlaxCLIPModel

    model = FlaxCLIPModel(ctx.config, _do_init=False)
    model.load_canonical_state(ctx.state)
    pixels = jnp.asarray(ctx.pixel_values)
    ids, mask = jnp.asarray(ctx.input_ids, jnp.int32), jnp.asarray(ctx.attention_mask, jnp.int32)
    image = jax.jit(lambda p, x: model.get_image_features(x, params=p))
    text = jax.jit(lambda p, i, m: model.get_text_features(i, attention_mask=m, params=p))
    return {
        "Flax jit": (
            lambda: np.asarray(image(model.params, pixels)),
            lambda: np.asarray(text(model.params, ids, mask)),
        )
    }


def _onnx_paths(ctx) -> dict:
    import torch

    from clip_core.onnx_engine import OnnxCLIP
    from clip_torch import CLIPModel
    from clip_torch.export import export_tower

    with torch.device("meta"):
        model = CLIPModel(ctx.config)
    model.load_canonical_state(ctx.state)
    folder = tempfile.mkdtemp(prefix="clip-bench-onnx-")
    ctx.config.save_pretrained(folder)
    for tower in ("text", "vision"):
        export_tower(model.eval(), tower, os.path.join(folder, f"{tower}.onnx"))
    clip = OnnxCLIP(folder)
    return {
        ORT: (
            lambda: clip.get_image_features(ctx.pixel_values),
            lambda: clip.get_text_features(ctx.input_ids, ctx.attention_mask),
        )
    }


BACKEND_OF = {"torch": "torch", "TF": "tf", "Flax": "flax", "ONNX": "onnx"}


def rows(ctx) -> list[dict]:
    paths = {}
    for build in (lambda: _torch_paths(ctx, ctx.compile), lambda: _tf_paths(ctx), lambda: _flax_paths(ctx)):
        try:
            paths.update(build())
        except ImportError as e:  # a framework that is not installed
            print(f"[race] skipped: {e}")
    paths.update(_onnx_paths(ctx))

    reference = {kind: paths["torch eager"][i]() for i, kind in enumerate(("image", "text"))}
    diffs = {
        name: max(float(np.abs(fns[i]() - reference[kind]).max()) for i, kind in enumerate(("image", "text")))
        for name, fns in paths.items()
    }
    rounds = 1 if ctx.quick else 3
    image = ctx.interleaved({n: fns[0] for n, fns in paths.items()}, rounds)
    text = ctx.interleaved({n: fns[1] for n, fns in paths.items()}, rounds)

    out = []
    for what, times in (("image features", image), ("text features", text)):
        for name, seconds in times.items():
            row = speed_row(SECTION, what, name, seconds, ORT, times[ORT], ctx.batch)
            row["max_abs_diff_vs_torch_eager"] = diffs[name]
            out.append(row)
        for prefix, backend in BACKEND_OF.items():  # each backend's fastest path with equal outputs
            mine = {n: s for n, s in times.items() if n.startswith(prefix) and diffs[n] <= EQUAL}
            if mine:
                best = min(mine, key=mine.get)
                row = speed_row(
                    SECTION, what, f"best CPU path {backend}: {best}", mine[best], ORT, times[ORT], ctx.batch
                )
                row["max_abs_diff_vs_torch_eager"] = diffs[best]
                out.append(row)
    return out
