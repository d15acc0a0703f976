"""How much of each backend's modeling.py also stands, line for line, in another backend's.

    python -m tools.mirror_share [--transformers]      (from the repo root)

A line counts when, stripped, it is longer than 12 characters. For each file two figures:
``distinct``, the share of its distinct lines that also occur in one of the other two files, and
``all``, the same over every line (a line repeated five times counts five times). With
``--transformers`` the same figures for transformers' own three CLIP files (modeling_clip.py,
modeling_tf_clip.py, modeling_flax_clip.py) of the installed transformers, for comparison.
"""

from __future__ import annotations

import argparse
import os

OURS = ("clip_torch/modeling.py", "clip_tf/modeling.py", "clip_flax/modeling.py")
THEIRS = ("modeling_clip.py", "modeling_tf_clip.py", "modeling_flax_clip.py")


def counted_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if len(line.strip()) > 12]


def shares(paths) -> dict[str, tuple[float, float, int]]:
    """{path: (distinct share %, all-lines share %, total lines)}."""
    lines = {p: counted_lines(p) for p in paths}
    out = {}
    for path in paths:
        others = set().union(*(set(lines[q]) for q in paths if q != path))
        own = lines[path]
        distinct = set(own)
        with open(path, encoding="utf-8") as f:
            total = sum(1 for _ in f)
        out[path] = (
            100.0 * len(distinct & others) / len(distinct),
            100.0 * sum(line in others for line in own) / len(own),
            total,
        )
    return out


def report(title: str, paths) -> None:
    print(title)
    for path, (distinct, every, total) in shares(paths).items():
        print(f"  {path:60s} distinct {distinct:5.1f} %   all lines {every:5.1f} %   {total} lines")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformers", action="store_true", help="also measure transformers' CLIP files")
    args = parser.parse_args(argv)
    report("ours", OURS)
    if args.transformers:
        import transformers.models.clip as clip

        folder = os.path.dirname(clip.__file__)
        report(
            f"transformers {__import__('transformers').__version__}",
            [os.path.join(folder, n) for n in THEIRS],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
