"""demo: the offline default corpus, and the whole pipeline end to end in its reduced (--quick) mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vocabshrink.errors import ConfigError, CorpusError

def test_default_corpus_is_deterministic_and_held_out(tmp_path):
    from vocabshrink.stages.demo import default_corpus

    train, valid = default_corpus(tmp_path / "a", max_chars=60_000)
    again = default_corpus(tmp_path / "b", max_chars=60_000)
    assert train.read_bytes() == again[0].read_bytes() and valid.read_bytes() == again[1].read_bytes()
    train_lines = {ln for ln in train.read_text(encoding="utf-8").splitlines() if ln}
    valid_lines = {ln for ln in valid.read_text(encoding="utf-8").splitlines() if ln}
    assert len(train.read_text(encoding="utf-8")) >= 60_000 and valid_lines
    assert not train_lines & valid_lines  # paragraphs are deduplicated across the split
    for line in list(train_lines)[:200]:
        assert line.isascii() and not line.startswith(">>>") and len(re.findall(r"[A-Za-z]{2,}", line)) >= 6


def test_default_corpus_without_sources(tmp_path, monkeypatch):
    import vocabshrink.stages.demo as demo_mod

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(demo_mod.sysconfig, "get_paths", lambda: {"stdlib": str(empty), "purelib": str(empty)})
    with pytest.raises(CorpusError, match="--corpus"):
        demo_mod.default_corpus(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.txt"))


def test_demo_refuses_an_earlier_run_and_a_missing_teacher(tmp_path):
    from vocabshrink.stages.demo import demo

    (tmp_path / "d" / "run").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        demo(out=tmp_path / "d", quick=True)
    with pytest.raises(Exception, match="nowhere"):
        demo(out=tmp_path / "e", quick=True, teacher=tmp_path / "nowhere", corpus=[__file__])


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, minilm_path):
    """build-vocab -> align -> init-student -> distill -> evaluate on the docstring corpus, via the CLI."""
    import torch
    from click.testing import CliRunner

    from vocabshrink.cli import cli

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CI-sized models; a busy shared core makes threads wait on each other
    try:
        res = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(tmp_path / "d"), "--no-progress",
                                       "--teacher", str(minilm_path)])
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    assert "## Size" in res.output and "report.md" in res.output
    root = tmp_path / "d"
    summary = json.loads((root / "demo_report.json").read_text(encoding="utf-8"))
    assert list(summary["seconds"]) == ["corpus", "build-vocab", "align", "init-student", "distill", "evaluate"]
    ev = summary["evaluation"]
    assert ev["size"]["student"]["vocab_k"] == pytest.approx(1.5)
    # the demo trims the teacher's vocabulary (its measured best start) instead of training one
    assert json.loads((root / "student-tok" / "vocab_report.json").read_text(encoding="utf-8"))["algorithm"] == "trim"
    assert ev["size_ratio"]["params"] > 3
    assert -1 <= ev["fidelity"]["teacher_agreement"] <= 1
    assert (root / "run" / "metrics.jsonl").exists()
    trained = json.loads((root / "run" / "training_report.json").read_text(encoding="utf-8"))
    assert set(trained["final_losses"]) == {"mse", "cosine", "sentence"} and trained["projection_fit"]
    report = Path(summary["stages"]["evaluate"])
    assert {p.name for p in report.glob("*.png")} == {"size_speed.png", "loss_curves.png", "fertility.png"}
    assert json.loads((report / "report.json").read_text(encoding="utf-8"))["fertility"]["source"].startswith("shard")
