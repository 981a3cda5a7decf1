"""The `tiny` fixture: the quick preset swapped for tiny_study.TINY for one test."""

from __future__ import annotations

import pytest

from snnkernels.study import config as C
from tiny_study import TINY


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(C.PRESETS, "quick", TINY)
