"""clip_tf against transformers' TFCLIPModel, both inside tf.function, on the bench context's weights.

Rows: image and text features in fp32 for ours and theirs (timed interleaved, in the same run, so
that load from other processes hits both alike), and ours compiled with XLA (jit_compile=True)
against the same transformers figure, to show what XLA adds.
"""

from __future__ import annotations

import tempfile

from tools.bench import speed_row

SECTION = "tf"
THEIRS = "transformers TFCLIPModel (tf.function)"


def _models(ctx):
    """(ours, theirs) with the context's weights; theirs reads the folder ours writes."""
    from transformers import TFCLIPModel as HFTFCLIPModel

    from clip_tf import TFCLIPModel

    ours = TFCLIPModel(ctx.config)
    ours.load_canonical_state(ctx.state)
    folder = tempfile.mkdtemp(prefix="clip-bench-tf-")
    ours.save_pretrained(folder)
    return ours, HFTFCLIPModel.from_pretrained(folder)  # our TF default, tf_model.h5, as theirs


def _row(what, ours_name, ours_seconds, theirs_seconds, batch):
    return speed_row(SECTION, what, ours_name, ours_seconds, THEIRS, theirs_seconds, batch)


def rows(ctx) -> list[dict]:
    import tensorflow as tf

    ours, theirs = _models(ctx)
    pixels = tf.constant(ctx.pixel_values)
    ids, mask = tf.constant(ctx.input_ids), tf.constant(ctx.attention_mask)

    def image_fn(model, jit=False):
        fn = tf.function(lambda p: model.get_image_features(pixel_values=p), jit_compile=jit)
        return lambda: fn(pixels).numpy()

    def text_fn(model, jit=False):
        fn = tf.function(lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=jit)
        return lambda: fn(ids, mask).numpy()

    rounds = 1 if ctx.quick else 3
    image = ctx.interleaved(
        {"ours": image_fn(ours), "theirs": image_fn(theirs), "xla": image_fn(ours, jit=True)}, rounds
    )
    text = ctx.interleaved(
        {"ours": text_fn(ours), "theirs": text_fn(theirs), "xla": text_fn(ours, jit=True)}, rounds
    )
    b = ctx.batch
    return [
        _row("image features", "clip_tf fp32 (tf.function)", image["ours"], image["theirs"], b),
        _row("text features", "clip_tf fp32 (tf.function)", text["ours"], text["theirs"], b),
        _row("image features", "clip_tf fp32 (tf.function, XLA)", image["xla"], image["theirs"], b),
        _row("text features", "clip_tf fp32 (tf.function, XLA)", text["xla"], text["theirs"], b),
    ]
