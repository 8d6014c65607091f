"""sweep: shapes that fit a parameter budget, trial runs scored on held-out text, the winner written, reruns kept."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from test_distill import lines, models  # noqa: F401  (session fixtures)
from vocabshrink.cli import cli
from vocabshrink.errors import ConfigError
from vocabshrink.stages import sweep as S


def test_parse_budget():
    assert S.parse_budget("5M") == 5_000_000 and S.parse_budget("750k") == 750_000
    assert S.parse_budget("5e6") == 5_000_000 and S.parse_budget(1234) == 1234
    for bad in ("five", "5G", "-3M", ""):
        with pytest.raises(ConfigError, match="--budget"):
            S.parse_budget(bad)


@pytest.mark.parametrize("shape", [(5000, 264, 3, 792), (30522, 384, 6, 1536), (1000, 48, 1, 144)])
def test_encoder_params_counts_what_transformers_builds(shape):
    import torch
    from transformers import BertConfig, BertModel

    vocab, hidden, layers, ffn = shape
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=12,
                        intermediate_size=ffn)
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False)
    assert S.encoder_params(vocab, hidden, layers, ffn) == sum(p.numel() for p in model.parameters())


def test_widest_fits_the_budget_and_one_step_more_does_not():
    t = S.widest(4_000_000, 6000, 3)
    assert t.params <= 4_000_000 and t.hidden % S.WIDTH_STEP == 0 and t.intermediate == S.FFN_RATIO * t.hidden
    assert S.encoder_params(6000, t.hidden + S.WIDTH_STEP, 3, S.FFN_RATIO * (t.hidden + S.WIDTH_STEP)) > 4_000_000
    assert t.hidden % t.heads == 0
    assert S.widest(10_000, 6000, 3) is None  # not even the narrowest fits
    # never wider than the teacher, never more or larger heads, never a larger FFN
    small = S.widest(4_000_000, 6000, 3, S.Limits(hidden=48, intermediate=100, heads=4, head_size=16))
    assert (small.hidden, small.intermediate, small.heads) == (48, 100, 3)
    minilm = S.Limits(384, 1536, 12, 32)
    assert S.heads_for(264, minilm) == 11 and S.heads_for(288, minilm) == 9
    assert S.heads_for(24, S.Limits(head_size=8)) == 3 and S.heads_for(24, S.Limits(heads=2, head_size=8)) is None


@pytest.mark.slow
def test_sweep_runs_the_trials_and_writes_the_winner(tmp_path, models, lines):  # noqa: F811
    corpus, held = tmp_path / "train.txt", tmp_path / "held.txt"
    corpus.write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    held.write_text("\n".join(lines[150:200]) + "\n", encoding="utf-8")
    args = dict(teacher=models["bare"], corpus=[corpus], eval_corpus=[held], out=tmp_path / "sweep",
                budget="200K", vocab_sizes=(400, 800), layers=(1, 2), steps=3, batch_size=8, progress=False)
    report = S.sweep(**args)
    assert len(report.trials) == 4 and all(t.params <= 200_000 for t in report.trials)
    assert all(t.agreement is not None for t in report.trials)
    scores = [t.agreement for t in report.trials]
    assert scores == sorted(scores, reverse=True) and report.winner is report.trials[0]
    student = tmp_path / "sweep" / "student"
    config = json.loads((student / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (report.winner.hidden, report.winner.layers)
    assert "<- winner" in report.table() and "agreement" in report.table()
    saved = json.loads((tmp_path / "sweep" / "sweep_report.json").read_text())
    assert saved["winner"]["folder"] == report.winner.folder
    # a rerun keeps every finished trial (no trial runs again) and picks the same winner
    before = {t.folder: (tmp_path / "sweep" / t.folder / "trial.json").stat().st_mtime_ns for t in report.trials}
    again = S.sweep(**args)
    assert again.winner.folder == report.winner.folder
    assert {t.folder: (tmp_path / "sweep" / t.folder / "trial.json").stat().st_mtime_ns
            for t in again.trials} == before


def test_sweep_refuses_bad_input(tmp_path, models):  # noqa: F811
    base = dict(teacher=models["bare"], corpus=[tmp_path / "c.txt"], eval_corpus=[tmp_path / "c.txt"],
                out=tmp_path / "s", progress=False)
    with pytest.raises(ConfigError, match="no student"):
        S.sweep(budget="1K", **base)
    with pytest.raises(ConfigError, match="--vocab"):
        S.sweep(budget="1M", vocab_sizes=(10,), **base)
    with pytest.raises(ConfigError, match="--eval-corpus"):
        S.sweep(**{**base, "eval_corpus": []}, budget="1M")
    res = CliRunner().invoke(cli, ["sweep", "x.txt", "--teacher", "t", "--eval-corpus", "y", "--budget", "1M",
                                   "--out", str(tmp_path / "o"), "--layers", "two"])
    assert res.exit_code != 0 and "comma-separated" in res.output
    assert "Example:" in CliRunner().invoke(cli, ["sweep", "--help"]).output


def test_sweep_data_trims_the_teachers_vocabulary_and_keeps_the_prompt(tmp_path, models, lines):  # noqa: F811
    """--algorithm trim: every student token is a teacher token, the prompt's tokens are kept; a rerun that asks
    for another algorithm over the same folder is refused instead of reusing the wrong vocabulary."""
    from vocabshrink.tokenization import load_tokenizer, prompt_tokens

    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(lines[:120]) + "\n", encoding="utf-8")
    prompt = "zygote quasar: "  # words the WikiText lines do not hold, so only --keep can bring them in
    pieces = prompt_tokens(models["bare"], prompt)
    assert pieces and prompt_tokens(models["bare"], "  ") == []
    common = dict(teacher=models["bare"], corpus=[corpus], eval_corpus=[corpus], vocab=400, max_length=32,
                  prompt=prompt, seed=0, progress=False)
    S._data(tmp_path / "v400", algorithm="trim", **common)
    report = json.loads((tmp_path / "v400" / "tok" / "vocab_report.json").read_text())
    assert report["algorithm"] == "trim" and report["vocab_size"] == 400
    student = load_tokenizer(tmp_path / "v400" / "tok").get_vocab()
    teacher = load_tokenizer(models["bare"]).get_vocab()
    assert set(student) <= set(teacher) and set(pieces) <= set(student)
    with pytest.raises(ConfigError, match="--algorithm trim"):
        S._data(tmp_path / "v400", algorithm=None, **common)
    S._data(tmp_path / "v400", algorithm="trim", **common)  # the same algorithm: reused
