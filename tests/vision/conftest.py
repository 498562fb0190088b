"""Vision tests: a tiny random Vim (conf/model/vim-test.yaml's numbers) and the fixture VTAB folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from stateft.vision.config import VimConfig

REPO = Path(__file__).resolve().parents[2]
VTAB_FIXTURES = REPO / "tests" / "fixtures" / "vtab"


def tiny_config(**changes) -> VimConfig:
    """4 x 4 patches of 4 pixels on a 16-pixel image (16 patches + the class token), width 32, 2 layers."""
    values = dict(d_model=32, n_layer=2, num_classes=5, img_size=16, patch_size=4, stride=4, d_state=4)
    return VimConfig(**{**values, **changes})


@pytest.fixture
def config() -> VimConfig:
    return tiny_config()
