"""make demo: build a random ViT-B/32-shaped CLIP, save it as a transformers folder, read it back.

(The conversion issue turns this into the full tour: every format, every backend, real photos.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip_core.config import CLIPConfig  # noqa: E402
from clip_core.pretrained import load_pretrained, save_pretrained  # noqa: E402
from tools.bench import random_state  # noqa: E402


def main() -> int:
    config = CLIPConfig()
    state = random_state(config, seed=0)
    params = sum(a.size for a in state.values())
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        written = save_pretrained(folder, config, state)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        config2, state2 = load_pretrained(folder, "clip")
        loaded = time.perf_counter() - start
        same = config2 == config and all(np.array_equal(state[k], state2[k]) for k in state)
        print(f"random CLIP ViT-B/32: {len(state)} tensors, {params / 1e6:.1f}M parameters")
        for path in written:
            print(f"  wrote {os.path.basename(path):<20} {os.path.getsize(path) / 2**20:8.1f} MiB")
        print(f"  save {saved:.2f}s, load {loaded:.2f}s, round trip identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
