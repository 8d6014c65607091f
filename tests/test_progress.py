"""Progress bars: plain lines at most every 30 s when stderr is not a terminal, a summary at the end."""

from __future__ import annotations

import io
import subprocess
import sys

from vocabshrink import progress


def test_line_bar_prints_at_most_one_line_per_interval_and_a_summary(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 31.0, 32.0, 40.0, 62.0, 70.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.LineBar(desc="distill", total=100, unit="step", stream=out)  # start at t=0
    for _ in range(6):  # at t = 1, 2, 31 (a line), 32, 40, 62 (a line)
        bar.update(10)
    bar.set_postfix(loss="0.5")
    bar.close()  # t = 70: the summary
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("distill: 30/100 step in 31 s") and lines[0].endswith("[running]")
    assert lines[2].startswith("distill: 60/100 step in 70 s") and "loss=0.5" in lines[2] and lines[2].endswith("[done]")


def test_progress_bar_kinds(monkeypatch):
    assert isinstance(progress.progress_bar(False, total=3), progress.NoBar)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress.progress_bar(True, total=3), progress.LineBar)


def test_a_logged_cli_run_has_no_carriage_returns(tmp_path, minilm_path):
    """vocabshrink build-vocab with stderr to a file: no tqdm fragments, a summary line per bar."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} of some text here, with words\n" for i in range(300)), encoding="utf-8")
    teacher = minilm_path
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "vocabshrink.cli", "build-vocab", str(corpus), "--teacher",
                               str(teacher), "--size", "200", "--out", str(tmp_path / "tok")], stderr=log, stdout=subprocess.DEVNULL, timeout=120)
    text = (tmp_path / "log.txt").read_text()
    assert "\r" not in text, text
    assert proc.returncode == 0 and "[done]" in text, text
