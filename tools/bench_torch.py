"""clip_torch against transformers' CLIPModel (sdpa), both in inference mode, on the bench context's weights.

Rows: image and text features in fp32 at the context's batch (timed interleaved, in the same run,
so that load from other processes hits both alike), then bf16 on a small batch with few runs (bf16
matmuls are very slow on CPUs without AVX512-BF16/AMX).
"""

from __future__ import annotations

from tools.bench import speed_row

SECTION = "torch"
THEIRS = "transformers CLIPModel (sdpa)"
BF16_IMAGES = 2
BF16_TEXTS = 2


def _models(ctx, dtype=None):
    """(ours, theirs) with the context's weights, in ``dtype`` (default float32)."""
    import torch

    from clip_torch import CLIPModel
    from tools.bench_transformers import hf_torch_model

    dtype = dtype or torch.float32
    with torch.device("meta"):  # no random init: the weights come from the context
        ours = CLIPModel(ctx.config).to(dtype)
    ours.load_canonical_state(ctx.state)
    return ours.eval(), hf_torch_model(ctx, "sdpa").to(dtype)


def _row(what, ours_name, ours_seconds, theirs_name, theirs_seconds, batch):
    return speed_row(SECTION, what, ours_name, ours_seconds, theirs_name, theirs_seconds, batch)


def _timings(ctx, models, images: int, texts: int, rounds: int, warm_once: bool = False, **time_kwargs):
    import torch

    pixels = torch.from_numpy(ctx.pixel_values[:images])
    ids = torch.from_numpy(ctx.input_ids[:texts])
    mask = torch.from_numpy(ctx.attention_mask[:texts])

    def image_fn(model):
        return lambda: model.get_image_features(pixel_values=pixels)

    def text_fn(model):
        return lambda: model.get_text_features(input_ids=ids, attention_mask=mask)

    with torch.inference_mode():
        image = ctx.interleaved({k: image_fn(m) for k, m in models.items()}, rounds, warm_once, **time_kwargs)
        text = ctx.interleaved({k: text_fn(m) for k, m in models.items()}, rounds, warm_once, **time_kwargs)
    return image, text


def rows(ctx) -> list[dict]:
    import torch

    ours, theirs = _models(ctx)
    image, text = _timings(
        ctx, {"ours": ours, "theirs": theirs}, ctx.batch, ctx.batch, rounds=1 if ctx.quick else 3
    )
    del ours, theirs
    out = [
        _row("image features", "clip_torch fp32", image["ours"], THEIRS, image["theirs"], ctx.batch),
        _row("text features", "clip_torch fp32", text["ours"], THEIRS, text["theirs"], ctx.batch),
    ]

    ours, theirs = _models(ctx, torch.bfloat16)
    # One warm-up each, then single calls alternating between ours and theirs over a few rounds.
    image, text = _timings(
        ctx,
        {"ours": ours, "theirs": theirs},
        BF16_IMAGES,
        BF16_TEXTS,
        rounds=3,
        warmup=0,
        runs=1,
        warm_once=True,
    )
    theirs_bf16 = "transformers CLIPModel (sdpa) bf16"
    out += [
        _row(
            f"image features b{BF16_IMAGES}",
            "clip_torch bf16",
            image["ours"],
            theirs_bf16,
            image["theirs"],
            BF16_IMAGES,
        ),
        _row(
            f"text features b{BF16_TEXTS}",
            "clip_torch bf16",
            text["ours"],
            theirs_bf16,
            text["theirs"],
            BF16_TEXTS,
        ),
    ]
    return out
