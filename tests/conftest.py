"""Fixtures every suite shares: the reference checkpoints that transformers writes for the tiny
configs, built once per test run (and shared by pytest-xdist's workers), and the parity pair's
folder that the backend suites are parametrised over.

The configs, inputs and checks these build on are plain names in tests/tiny_configs.py.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.tiny_configs import CONFIGS, LOGIT_SCALES, NAMED


def write_reference_checkpoint(name: str, folder) -> None:
    """transformers' CLIPModel for NAMED[name], seeded, every parameter moved by 0.05 * N(0, 1) (so
    that a LayerNorm weight/bias, bias or transpose mix-up cannot hide behind the initial 1 / 0
    values), logit_scale LOGIT_SCALES[name]; save_pretrained's config.json and model.safetensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(**NAMED[name])).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
        model.logit_scale.fill_(LOGIT_SCALES[name])
    model.save_pretrained(folder)


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory):
    """``folder(name) -> str``: the reference checkpoint of a LOGIT_SCALES name, in a folder named
    after it. Read-only: copy it to change it.

    Written once per test run: under xdist every worker looks in the run's shared temporary folder
    first, and a worker that builds one moves it in place whole (a rename), so the others find it
    complete or not at all (two workers racing both build it, and the second rename loses)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "reference-checkpoints"
    root.mkdir(exist_ok=True)

    def folder(name: str) -> str:
        final = root / name
        if not final.is_dir():
            partial = tmp_path_factory.mktemp(f"{name}-partial")
            write_reference_checkpoint(name, partial)
            try:
                os.rename(partial, final)
            except OSError:  # another worker's copy got there first
                shutil.rmtree(partial)
        return str(final)

    return folder


@pytest.fixture(scope="module", params=list(CONFIGS))
def reference_folder(request, reference_checkpoint) -> str:
    """The reference checkpoint of each parity config in turn (tests/tiny_configs.Reference reads it)."""
    return reference_checkpoint(request.param)
