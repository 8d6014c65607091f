"""The public surface: every name `vocabshrink` exports resolves, stage functions are functions, types ship."""

from __future__ import annotations

import inspect
from pathlib import Path

import vocabshrink


def test_every_exported_name_resolves():
    for name in vocabshrink.__all__:
        assert getattr(vocabshrink, name) is not None, name
    for name in ("build_vocab", "align", "audit", "init_student", "distill", "evaluate", "export", "demo"):
        assert inspect.isfunction(getattr(vocabshrink, name)), name  # not a submodule of the same name


def test_the_package_ships_its_type_marker():
    assert (Path(vocabshrink.__file__).parent / "py.typed").is_file()
