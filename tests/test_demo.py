"""`make demo`, the main job, end to end: ViT-B/32 shape, so it is marked slow."""

import pytest

from tools import demo


@pytest.mark.slow
def test_demo_backends_agree(capsys):
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "OK: backends agree" in out
    for backend in ("torch", "tf", "flax"):
        assert f"{backend:<8}chelsea" in out
