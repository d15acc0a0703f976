"""Input checks shared by the three backends, so that bad input fails the same way everywhere.

They look at shapes (and, where the framework can tell without tracing, at values) and raise
``ValueError`` naming the bad thing, before any framework op can fail obscurely. A backend passes
what it knows: ``check_text_inputs`` takes the shapes (None for an absent input, None for a
dimension unknown while tracing) and, when the ids are concrete, their (min, max) and whether they
are integers; ``check_pixel_values`` the pixel shape.
"""

from __future__ import annotations

from collections.abc import Sequence

Shape = Sequence[int | None]


def check_text_inputs(
    config,
    input_ids: Shape | None,
    attention_mask: Shape | None = None,
    position_ids: Shape | None = None,
    id_range: tuple[int, int] | None = None,
    integer_ids: bool = True,
) -> None:
    """input_ids (given, integer, [batch, seq], in the vocabulary) and the masks that go with them."""
    require_inputs(input_ids=input_ids)
    if not integer_ids:
        raise ValueError("input_ids must be integer token ids, got a floating-point or complex tensor")
    check_input_ids(input_ids, config, id_range)
    check_attention_mask(attention_mask, input_ids)
    check_position_ids(position_ids, input_ids)


def check_input_ids(shape: Sequence[int], config, id_range: tuple[int, int] | None = None) -> None:
    """``input_ids`` must be [batch, seq] with seq <= max_position_embeddings and ids in the vocabulary.

    ``id_range`` is (min, max) of the ids when the caller can read values (not under jit tracing).
    """
    if len(shape) != 2:
        raise ValueError(f"input_ids must have 2 dimensions [batch, sequence], got shape {tuple(shape)}")
    if shape[1] is not None and shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"input_ids has {shape[1]} tokens, more than max_position_embeddings={config.max_position_embeddings}; "
            "truncate the text (the tokenizer's truncation=True)"
        )
    if shape[1] == 0:
        raise ValueError("input_ids has 0 tokens per sequence")
    if id_range is not None:
        low, high = id_range
        if low < 0 or high >= config.vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}), "
                f"got values from {low} to {high}"
            )


def check_attention_mask(mask_shape: Sequence[int] | None, ids_shape: Sequence[int]) -> None:
    if mask_shape is not None and tuple(mask_shape) != tuple(ids_shape):
        raise ValueError(
            f"attention_mask shape {tuple(mask_shape)} must equal input_ids shape {tuple(ids_shape)}"
        )


def check_position_ids(shape: Sequence[int] | None, ids_shape: Sequence[int]) -> None:
    if shape is None:
        return
    if len(shape) not in (1, 2) or shape[-1] != ids_shape[-1]:
        raise ValueError(
            f"position_ids shape {tuple(shape)} must be [sequence] or [batch, sequence] matching input_ids {tuple(ids_shape)}"
        )


def check_pixel_values(
    shape: Shape | None, config, interpolate_pos_encoding: bool = False, channels_last: bool = False
) -> None:
    """``pixel_values`` must be channels-first [batch, channels, height, width] of the config's size
    (``channels_last``: [batch, height, width, channels], what the Flax Linen modules take).

    Dimensions unknown while tracing (None) are taken to be the expected ones.
    """
    require_inputs(pixel_values=shape)
    layout = "[batch, height, width, channels]" if channels_last else "[batch, channels, height, width]"
    if len(shape) == 4 and channels_last:
        shape = (shape[0], shape[3], shape[1], shape[2])
    if interpolate_pos_encoding and len(shape) == 4 and None in tuple(shape)[2:]:
        raise ValueError(
            "interpolate_pos_encoding needs the image height and width known when the model is traced; "
            "give tf.function an input_signature with static height and width"
        )
    if len(shape) == 4:
        expected = (0, config.num_channels, config.image_size, config.image_size)
        shape = tuple(e if s is None else s for s, e in zip(shape, expected))
    if len(shape) != 4:
        raise ValueError(f"pixel_values must have 4 dimensions {layout}, got shape {tuple(shape)}")
    channels, height, width = shape[1], shape[2], shape[3]
    if channels != config.num_channels:
        wrong_layout = (shape[2] if channels_last else shape[-1]) == config.num_channels
        side = "channels-last (the Flax Linen modules' layout)" if channels_last else "channels-first"
        hint = f" (pixel_values are {side}: {layout})" if wrong_layout else ""
        raise ValueError(f"pixel_values must have {config.num_channels} channels, got {channels}{hint}")
    if interpolate_pos_encoding:
        if height < config.patch_size or width < config.patch_size:
            raise ValueError(
                f"pixel_values of {height}x{width} are smaller than one {config.patch_size}x{config.patch_size} patch"
            )
    elif (height, width) != (config.image_size, config.image_size):
        raise ValueError(
            f"pixel_values must be {config.image_size}x{config.image_size}, got {height}x{width}; "
            "pass interpolate_pos_encoding=True to use another size"
        )


def check_loss_batches(num_texts: int | None, num_images: int | None) -> None:
    if None not in (num_texts, num_images) and num_texts != num_images:
        raise ValueError(
            f"return_loss needs as many texts as images (matching pairs), got {num_texts} texts and {num_images} images"
        )


def require_inputs(**inputs) -> None:
    """At least one of the named inputs must be given."""
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise ValueError(f"You have to specify {' and '.join(missing)}")
