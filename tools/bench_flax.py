"""clip_flax against transformers' FlaxCLIPModel, both under jax.jit, on the bench context's weights.

Rows: image and text features in fp32 for ours and theirs (timed interleaved, in the same run, so
that load from other processes hits both alike), then the same with bfloat16 compute (params kept
in fp32; ``dtype=jnp.bfloat16`` on both sides).
"""

from __future__ import annotations

import tempfile

from tools.bench import speed_row

SECTION = "flax"
THEIRS = "transformers FlaxCLIPModel (jit)"


def _models(ctx, dtype):
    """(ours, (theirs, theirs_params)) with the context's weights; theirs reads the flax_model.msgpack ours writes."""
    from transformers import FlaxCLIPModel as HFFlaxCLIPModel

    from clip_flax import FlaxCLIPModel

    ours = FlaxCLIPModel(ctx.config, dtype=dtype, _do_init=False)
    ours.load_canonical_state(ctx.state)
    folder = tempfile.mkdtemp(prefix="clip-bench-flax-")
    ours.save_pretrained(folder, formats=("flax",))
    theirs, theirs_params = HFFlaxCLIPModel.from_pretrained(folder, dtype=dtype, _do_init=False)
    return ours, (theirs, theirs_params)


def _row(what, ours_name, ours_seconds, theirs_seconds, batch, theirs_name=THEIRS):
    return speed_row(SECTION, what, ours_name, ours_seconds, theirs_name, theirs_seconds, batch)


def _timings(ctx, dtype) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp

    ours, (theirs, theirs_params) = _models(ctx, dtype)
    pixels = jnp.asarray(ctx.pixel_values)
    ids = jnp.asarray(ctx.input_ids, jnp.int32)
    mask = jnp.asarray(ctx.attention_mask, jnp.int32)

    def image_fn(model, params):
        fn = jax.jit(lambda p, x: model.get_image_features(x, params=p))
        return lambda: jax.block_until_ready(fn(params, pixels))

    def text_fn(model, params):
        fn = jax.jit(lambda p, i, m: model.get_text_features(i, attention_mask=m, params=p))
        return lambda: jax.block_until_ready(fn(params, ids, mask))

    rounds = 1 if ctx.quick else 3
    image = ctx.interleaved(
        {"ours": image_fn(ours, ours.params), "theirs": image_fn(theirs, theirs_params)}, rounds
    )
    text = ctx.interleaved(
        {"ours": text_fn(ours, ours.params), "theirs": text_fn(theirs, theirs_params)}, rounds
    )
    return image, text


def rows(ctx) -> list[dict]:
    import jax.numpy as jnp

    b = ctx.batch
    image, text = _timings(ctx, jnp.float32)
    out = [
        _row("image features", "clip_flax fp32 (jit)", image["ours"], image["theirs"], b),
        _row("text features", "clip_flax fp32 (jit)", text["ours"], text["theirs"], b),
    ]
    image, text = _timings(ctx, jnp.bfloat16)
    theirs_bf16 = "transformers FlaxCLIPModel bf16 (jit)"
    out += [
        _row(
            "image features", "clip_flax bf16 compute (jit)", image["ours"], image["theirs"], b, theirs_bf16
        ),
        _row("text features", "clip_flax bf16 compute (jit)", text["ours"], text["theirs"], b, theirs_bf16),
    ]
    return out
