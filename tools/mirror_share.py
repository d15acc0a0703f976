"""How much of each backend's modeling.py also stands, line for line, in another backend's.

    python -m tools.mirror_share [--transformers]      (from the repo root)

A line counts when, stripped, it is longer than 12 characters. For each file three figures:
``share``, the issue's measure: its counted lines that also occur in one of the other two files, over
all its non-blank lines (a line repeated five times counts five times); ``distinct``, the share of
its distinct counted lines that occur in another file; ``all``, the shared counted lines over all
counted lines. With
``--transformers`` the same figures for transformers' own three CLIP files (modeling_clip.py,
modeling_tf_clip.py, modeling_flax_clip.py) of the installed transformers, for comparison.
"""

from __future__ import annotations

import argparse
import os

OURS = ("clip_torch/modeling.py", "clip_tf/modeling.py", "clip_flax/modeling.py")
THEIRS = ("modeling_clip.py", "modeling_tf_clip.py", "modeling_flax_clip.py")


def stripped_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]


def counted(lines: list[str]) -> list[str]:
    return [line for line in lines if len(line) > 12]


def shares(paths) -> dict[str, tuple[float, float, float, int]]:
    """{path: (share %, distinct share %, all-counted-lines share %, total lines)}."""
    lines = {p: stripped_lines(p) for p in paths}
    out = {}
    for path in paths:
        others = set().union(*(set(counted(lines[q])) for q in paths if q != path))
        own = counted(lines[path])
        shared = sum(line in others for line in own)
        non_blank = sum(1 for line in lines[path] if line)
        out[path] = (
            100.0 * shared / non_blank,
            100.0 * len(set(own) & others) / len(set(own)),
            100.0 * shared / len(own),
            len(lines[path]),
        )
    return out


def report(title: str, paths) -> None:
    print(title)
    for path, (share, distinct, every, total) in shares(paths).items():
        print(
            f"  {os.path.basename(os.path.dirname(path)) + '/' + os.path.basename(path):30s} share {share:5.1f} %"
            f"   (distinct {distinct:5.1f} %, of counted lines {every:5.1f} %)   {total} lines"
        )


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
