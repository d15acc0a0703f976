"""An independent, deliberately plain numpy forward pass of OpenAI's CLIP on its *own* state-dict names.

It shares nothing with our backends or with clip_core's name mapping, so agreeing with it says
that the conversion of OpenAI / open_clip checkpoints is right. float64 throughout.
"""

from __future__ import annotations

import numpy as np


def random_openai_state_dict(
    seed: int = 0,
    *,
    text_width: int = 64,
    vision_width: int = 128,
    layers: tuple[int, int] = (2, 3),
    vocab: int = 1000,
    context: int = 16,
    patch: int = 8,
    image: int = 32,
    embed_dim: int = 48,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    sd = {
        "token_embedding.weight": r(vocab, text_width, scale=0.5),
        "positional_embedding": r(context, text_width, scale=0.1),
        "ln_final.weight": 1 + r(text_width),
        "ln_final.bias": r(text_width),
        "text_projection": r(text_width, embed_dim, scale=0.2),
        "logit_scale": np.asarray(np.log(1 / 0.07) + 0.3, np.float32),
        "visual.class_embedding": r(vision_width, scale=0.5),
        "visual.positional_embedding": r((image // patch) ** 2 + 1, vision_width, scale=0.1),
        "visual.conv1.weight": r(vision_width, 3, patch, patch),
        "visual.ln_pre.weight": 1 + r(vision_width),
        "visual.ln_pre.bias": r(vision_width),
        "visual.ln_post.weight": 1 + r(vision_width),
        "visual.ln_post.bias": r(vision_width),
        "visual.proj": r(vision_width, embed_dim, scale=0.2),
    }
    for tower, width, count in (("", text_width, layers[0]), ("visual.", vision_width, layers[1])):
        for i in range(count):
            p = f"{tower}transformer.resblocks.{i}."
            sd[p + "attn.in_proj_weight"] = r(3 * width, width, scale=0.15)
            sd[p + "attn.in_proj_bias"] = r(3 * width)
            sd[p + "attn.out_proj.weight"] = r(width, width, scale=0.15)
            sd[p + "attn.out_proj.bias"] = r(width)
            sd[p + "ln_1.weight"] = 1 + r(width)
            sd[p + "ln_1.bias"] = r(width)
            sd[p + "ln_2.weight"] = 1 + r(width)
            sd[p + "ln_2.bias"] = r(width)
            sd[p + "mlp.c_fc.weight"] = r(4 * width, width, scale=0.15)
            sd[p + "mlp.c_fc.bias"] = r(4 * width)
            sd[p + "mlp.c_proj.weight"] = r(width, 4 * width, scale=0.1)
            sd[p + "mlp.c_proj.bias"] = r(width)
    return {prefix + k: v for k, v in sd.items()}


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _block(x, sd, p, heads, causal):
    w = {k[len(p) :]: v.astype(np.float64) for k, v in sd.items() if k.startswith(p)}
    n, d = x.shape[-2:]
    h = _ln(x, w["ln_1.weight"], w["ln_1.bias"])
    qkv = h @ w["attn.in_proj_weight"].T + w["attn.in_proj_bias"]
    q, k, v = np.split(qkv, 3, axis=-1)
    split = lambda t: t.reshape(*t.shape[:-1], heads, d // heads).swapaxes(-2, -3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(d // heads)
    if causal:
        scores = scores + np.triu(np.full((n, n), -np.inf), 1)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    attn = scores / scores.sum(-1, keepdims=True)
    out = (attn @ v).swapaxes(-2, -3).reshape(*x.shape)
    x = x + out @ w["attn.out_proj.weight"].T + w["attn.out_proj.bias"]
    h = _ln(x, w["ln_2.weight"], w["ln_2.bias"])
    h = h @ w["mlp.c_fc.weight"].T + w["mlp.c_fc.bias"]
    h = h * (1 / (1 + np.exp(-1.702 * h)))  # quick_gelu, as OpenAI's models use
    return x + h @ w["mlp.c_proj.weight"].T + w["mlp.c_proj.bias"]


def _layers(sd, prefix):
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})


def encode_text(sd: dict, ids: np.ndarray) -> np.ndarray:
    """OpenAI's encode_text: causal transformer, feature at argmax(ids), projected (not normalised)."""
    f = lambda k: sd[k].astype(np.float64)  # noqa: E731
    width = f("ln_final.weight").shape[0]
    x = f("token_embedding.weight")[ids] + f("positional_embedding")[: ids.shape[1]]
    for i in _layers(sd, "transformer.resblocks."):
        x = _block(x, sd, f"transformer.resblocks.{i}.", width // 64, causal=True)
    x = _ln(x, f("ln_final.weight"), f("ln_final.bias"))
    return x[np.arange(len(ids)), ids.argmax(-1)] @ f("text_projection")


def encode_image(sd: dict, pixels: np.ndarray) -> np.ndarray:
    """OpenAI's VisionTransformer: conv patches, class token, ln_pre, blocks, ln_post of the class token, proj."""
    f = lambda k: sd[k].astype(np.float64)  # noqa: E731
    conv = f("visual.conv1.weight")
    width, _, p, _ = conv.shape
    b, c, hgt, wid = pixels.shape
    patches = pixels.astype(np.float64).reshape(b, c, hgt // p, p, wid // p, p).transpose(0, 2, 4, 1, 3, 5)
    x = patches.reshape(b, -1, c * p * p) @ conv.reshape(width, -1).T
    cls = np.broadcast_to(f("visual.class_embedding"), (b, 1, width))
    x = np.concatenate([cls, x], axis=1) + f("visual.positional_embedding")
    x = _ln(x, f("visual.ln_pre.weight"), f("visual.ln_pre.bias"))
    for i in _layers(sd, "visual.transformer.resblocks."):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}.", width // 64, causal=False)
    return _ln(x[:, 0], f("visual.ln_post.weight"), f("visual.ln_post.bias")) @ f("visual.proj")
