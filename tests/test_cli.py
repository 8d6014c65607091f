"""Every command checks its option values while parsing: exit 1, one line naming the option and its range."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from vocabshrink.cli import cli
from vocabshrink.errors import ConfigError

BASE = {
    "build-vocab": ["corpus.txt", "--teacher", "t", "--out", "o", "--size", "100"],
    "align": ["corpus.txt", "--teacher", "t", "--student", "s", "--out", "o"],
    "inspect": ["shards"],
    "init-student": ["--teacher", "t", "--tokenizer", "k", "--out", "o"],
    "distill": ["--teacher", "t", "--student", "s", "--data", "d", "--out", "o"],
    "evaluate": ["--teacher", "t", "--student", "s", "--out", "o"],
    "demo": [],
}

BAD = [
    ("build-vocab", "--size", "0"), ("build-vocab", "--size", "-5"), ("build-vocab", "--coverage", "0"),
    ("build-vocab", "--coverage", "1.5"), ("build-vocab", "--min-frequency", "-1"), ("build-vocab", "--eval-lines", "0"),
    ("build-vocab", "--max-lines", "0"), ("build-vocab", "--seed", "-1"), ("build-vocab", "--fill", "all"),
    ("align", "--max-length", "-1"), ("align", "--max-length", "0"), ("align", "--max-length", "7"),
    ("align", "--workers", "0"), ("align", "--num-shards", "0"), ("align", "--shard-index", "-1"),
    ("align", "--examples-per-shard", "0"), ("align", "--max-lines", "-3"),
    ("inspect", "--examples", "-1"), ("inspect", "--seed", "-2"),
    ("init-student", "--layers", "0"), ("init-student", "--hidden", "-8"), ("init-student", "--heads", "0"),
    ("init-student", "--intermediate", "0"), ("init-student", "--eval-sentences", "2"), ("init-student", "--seed", "-1"),
    ("distill", "--max-length", "-1"), ("distill", "--max-length", "0"), ("distill", "--batch-size", "0"),
    ("distill", "--grad-accum", "0"), ("distill", "--max-steps", "0"), ("distill", "--lr", "0"),
    ("distill", "--lr", "-1e-3"), ("distill", "--weight-decay", "-0.1"), ("distill", "--embedding-lr-scale", "-1"), ("distill", "--warmup-steps", "-1"),
    ("distill", "--clip-norm", "-1"), ("distill", "--mlm-probability", "0"), ("distill", "--mlm-probability", "1"),
    ("distill", "--mlm-weight", "-1"), ("distill", "--mse-weight", "-0.5"), ("distill", "--cosine-weight", "-1"),
    ("distill", "--kl-weight", "-1"), ("distill", "--match-weight", "-1"), ("distill", "--sentence-weight", "-1"),
    ("distill", "--temperature", "0"), ("distill", "--eval-every", "-1"), ("distill", "--eval-batches", "0"),
    ("distill", "--checkpoint-every", "-1"), ("distill", "--keep-checkpoints", "0"), ("distill", "--log-every", "0"),
    ("distill", "--seed", "-1"), ("distill", "--batch-size", "many"),
    ("evaluate", "--batch-size", "0"), ("evaluate", "--max-length", "1"), ("evaluate", "--max-sentences", "1"),
    ("evaluate", "--max-train", "0"), ("evaluate", "--warmup", "-1"), ("evaluate", "--repeats", "0"),
    ("evaluate", "--threads", "0"), ("evaluate", "--seed", "-1"), ("evaluate", "--speed-shape", "16by512"),
    ("demo", "--seed", "-1"),
]


@pytest.mark.parametrize("command,option,value", BAD)
def test_bad_option_values_exit_1_with_one_line(command, option, value):
    res = CliRunner().invoke(cli, [command, *BASE[command], option, value])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], res.output
    assert "Traceback" not in res.output


def test_the_message_gives_the_range():
    res = CliRunner().invoke(cli, ["distill", *BASE["distill"], "--max-length", "-1"])
    assert "--max-length" in res.output and "x>=8" in res.output


def test_bad_values_are_refused_before_anything_heavy_loads():
    """The check runs while parsing: neither torch nor transformers is imported."""
    code = ("import sys\nfrom vocabshrink.cli import main\n"
            "sys.argv = ['vocabshrink', 'distill', '--teacher', 't', '--student', 's', '--data', 'd', '--out', 'o',"
            " '--max-length', '-1']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('heavy' if {'torch', 'transformers'} & set(sys.modules) else 'light', code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["light", "1"], out.stdout + out.stderr
    assert "--max-length" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("kw,match", [
    ({"max_length": -1}, "--max-length must be in \\[8, inf\\)"), ({"max_length": 0}, "--max-length"),
    ({"lr": float("nan")}, "--lr"), ({"warmup_steps": -1}, "--warmup-steps"), ({"log_every": 0}, "--log-every"),
    ({"mlm_probability": 1.0}, "--mlm-probability"), ({"seed": -1}, "--seed"),
    ({"mse_weight": float("nan")}, "loss weights"), ({"embedding_lr_scale": -0.5}, "--embedding-lr-scale"),
])
def test_distill_function_checks_options_before_loading(tmp_path, kw, match):
    from vocabshrink.stages.distill import distill

    with pytest.raises(ConfigError, match=match):  # the models do not exist: nothing was loaded
        distill(teacher=tmp_path / "no-teacher", student=tmp_path / "no-student", data=[tmp_path / "no-data"],
                out=tmp_path / "run", **kw)


def test_distill_options_and_the_cli_agree():
    """A distill option is a DistillOptions field and a click option, with the same default."""
    import dataclasses

    from vocabshrink.cli import cli
    from vocabshrink.stages.distill import DistillOptions

    command = cli.commands["distill"]
    def unset(value):  # click's marker for "no default" (a flag off, a repeatable option empty)
        return value is None or value == () or type(value).__name__ == "Sentinel"

    flags = {p.name for p in command.params if getattr(p, "is_flag", False)}
    click_defaults = {p.name: (False if p.name in flags and unset(p.default) else p.default) for p in command.params}
    fields = {f.name: f.default for f in dataclasses.fields(DistillOptions)}
    assert set(click_defaults) == set(fields)
    for name, default in fields.items():
        if default is dataclasses.MISSING:
            continue
        cli_default = click_defaults[name]
        if unset(cli_default):
            cli_default = None
        assert cli_default == default, (name, cli_default, default)
