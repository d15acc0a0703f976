"""Prompt templates for zero-shot classification: our own sets, and reading a user's.

A template is a sentence with ``{}`` (or CLIP_benchmark's ``{c}``) where the class name goes. The
CLIP paper's zero-shot numbers come from ensembles of such prompts (each prompt embedded, the
embeddings of one class averaged): ``clip_core.zeroshot`` does that with any of these sets.

- ``generic``: photos of everyday things (the default);
- ``objects``: single objects, products, close-ups;
- ``scenes``: places and landscapes;
- ``aerial``: satellite and aerial imagery;
- ``textures``: surfaces and materials;
- ``art``: drawings, paintings and renderings;
- ``shapes``: simple drawn shapes on a plain background (the synthetic shapes of clip_flax.data).

``load_templates(spec)`` takes a set's name, a text file (one template per line, ``#`` comments),
or a JSON file holding a list or CLIP_benchmark's ``{dataset: [templates]}`` object (with ``key``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "generic": (
        "a photo of a {}.",
        "a picture of a {}.",
        "an image of a {}.",
        "a photo of the {}.",
        "a good photo of a {}.",
        "a close-up photo of a {}.",
        "a cropped photo of a {}.",
        "a bright photo of a {}.",
        "a dark photo of a {}.",
        "a blurry photo of a {}.",
        "a low resolution photo of a {}.",
        "a photo of a small {}.",
        "a photo of a large {}.",
        "a photo of one {}.",
        "a snapshot of a {}.",
        "a {} in a photo.",
        "a drawing of a {}.",
        "a rendering of a {}.",
    ),
    "objects": (
        "a photo of a {}.",
        "a product photo of a {}.",
        "a close-up photo of a {}.",
        "a {} on a white background.",
        "a photo of a {} on a table.",
        "a photo of my {}.",
        "a studio photo of a {}.",
        "a photo of a single {}.",
    ),
    "scenes": (
        "a photo of a {}.",
        "a view of a {}.",
        "a photo taken at a {}.",
        "a wide photo of a {}.",
        "a landscape photo of a {}.",
        "a photo of the {} outdoors.",
        "a scene of a {}.",
    ),
    "aerial": (
        "a satellite photo of {}.",
        "an aerial photo of {}.",
        "a satellite image showing {}.",
        "an overhead view of {}.",
        "a top-down aerial image of {}.",
        "a remote sensing image of {}.",
    ),
    "textures": (
        "a photo of a {} texture.",
        "a close-up of a {} surface.",
        "a {} pattern.",
        "a photo of {} material.",
        "a {} texture.",
        "a macro photo of a {} surface.",
    ),
    "art": (
        "a drawing of a {}.",
        "a painting of a {}.",
        "a sketch of a {}.",
        "a cartoon of a {}.",
        "a doodle of a {}.",
        "an illustration of a {}.",
        "a rendering of a {}.",
    ),
    "shapes": (
        "a {}.",
        "a {} shape.",
        "a picture of a {}.",
        "a drawing of a {}.",
        "an image of a {}.",
        "a simple {}.",
        "a {} on a plain background.",
        "one {}.",
    ),
}

DEFAULT_TEMPLATES = "generic"


def fill(template: str, name: str) -> str:
    """``template`` with the class name in its ``{}`` or ``{c}`` slot."""
    if "{c}" in template:
        return template.replace("{c}", name)
    return template.replace("{}", name)


def check_templates(templates: Sequence[str], where: str = "templates") -> tuple[str, ...]:
    """The templates as a tuple; each must be a non-empty string with one ``{}`` or ``{c}`` slot."""
    if isinstance(templates, str):
        raise ValueError(f"{where}: expected a list of templates, got one string {templates!r}")
    out = tuple(templates)
    if not out:
        raise ValueError(f"{where}: no templates")
    for t in out:
        if not isinstance(t, str) or ("{}" not in t and "{c}" not in t):
            raise ValueError(f"{where}: template {t!r} has no '{{}}' (or '{{c}}') slot for the class name")
    return out


def load_templates(spec: str | Sequence[str] | None = None, key: str | None = None) -> tuple[str, ...]:
    """Templates from a set name (see TEMPLATE_SETS), a .txt/.json file, or a list of strings.

    A JSON object (CLIP_benchmark's templates file) needs ``key``, the dataset to take, unless it
    has a single entry. Errors are ValueError / FileNotFoundError naming the set or file.
    """
    if spec is None:
        return TEMPLATE_SETS[DEFAULT_TEMPLATES]
    if not isinstance(spec, (str, os.PathLike)):
        return check_templates(spec)
    spec = os.fspath(spec)
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    if not os.path.isfile(spec):
        if os.sep in spec or spec.endswith((".json", ".txt")):
            raise FileNotFoundError(f"templates file {spec} does not exist")
        raise ValueError(
            f"unknown template set {spec!r}: choose one of {', '.join(TEMPLATE_SETS)}, or a file"
        )
    with open(spec, encoding="utf-8") as f:
        text = f.read()
    if spec.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{spec}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            if key is None and len(data) == 1:
                key = next(iter(data))
            if key not in data:
                raise ValueError(f"{spec}: give the entry to use, one of {', '.join(map(str, data))}")
            data = data[key]
        if not isinstance(data, list):
            raise ValueError(f"{spec}: expected a list of templates (or an object of lists)")
        return check_templates(data, spec)
    lines = [line.strip() for line in text.splitlines()]
    return check_templates([line for line in lines if line and not line.startswith("#")], spec)


__all__ = ["DEFAULT_TEMPLATES", "TEMPLATE_SETS", "check_templates", "fill", "load_templates"]
