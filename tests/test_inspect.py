"""inspect: the audit of a shard folder, and the align/inspect commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import bert_template, train_student

from vocabshrink.stages.inspect import audit
from vocabshrink.cli import cli
from vocabshrink.errors import ShardError


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory, data_dir, minilm_path, minilm_tokenizer):
    root = tmp_path_factory.mktemp("audit")
    valid = data_dir / "en" / "wikitext2" / "valid.txt"
    corpus = root / "small.txt"
    corpus.write_text("".join(valid.read_text(encoding="utf-8").splitlines(keepends=True)[:200]), encoding="utf-8")
    student = train_student("bytelevel", [str(corpus)], 500)
    student.save(str(root / "student.json"))
    out = root / "shards"
    result = CliRunner().invoke(cli, ["align", str(corpus), "--teacher", str(minilm_path), "--student",
                                      str(root / "student.json"), "--out", str(out), "--max-length", "48",
                                      "--examples-per-shard", "50", "--no-progress"])
    assert result.exit_code == 0, result.output
    return root, out, json.loads(result.output)


def test_align_command_prints_and_writes_its_report(cli_env):
    _, out, printed = cli_env
    assert printed == json.loads((out / "align_report.json").read_text())
    assert printed["examples"] > 0 and printed["shards"] == -(-printed["examples"] // 50)


def test_audit_counts_and_alignment_statistics(cli_env):
    _, out, printed = cli_env
    report = audit(out, examples=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert report.examples == printed["examples"] == sum(e["examples"] for e in manifest["shards"])
    assert report.teacher_tokens == sum(e["teacher_tokens"] for e in manifest["shards"])
    assert report.split_tokens == printed["split_tokens"]
    assert report.teacher_fingerprint == manifest["teacher"]["fingerprint"]
    assert abs(sum(report.fertility.values()) - 1) < 1e-9
    assert report.mean_fertility > 1  # a 500-token byte-level student splits most teacher tokens
    assert report.student_per_teacher > 1
    assert all(0 <= v <= 1 for v in report.unk_rates.values())
    assert 0 <= report.dropped_share < 0.01
    assert len(report.samples) == 2 and all(" | " in row for s in report.samples for row in s["rows"][:-1])
    json.loads(report.to_json())
    assert "fertility" in report.to_text()


def test_unk_rates_count_unknown_splits(cli_env, tmp_path, minilm_path, minilm_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from vocabshrink.stages.align import align

    _, out, _ = cli_env
    # a byte-level student can spell every teacher token, so nothing is UNK on its split side
    assert audit(out, examples=0).unk_rates["split"] == 0.0
    student = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    student.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    student.train_from_iterator(["abc def"] * 10, trainers.WordPieceTrainer(
        vocab_size=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    bert_template(student, ids={"[CLS]": 2, "[SEP]": 3})
    corpus = tmp_path / "unk.txt"
    corpus.write_text("abc \u2603 \u03bb def\n", encoding="utf-8")
    assert minilm_tokenizer.encode("abc \u2603 \u03bb def", add_special_tokens=False).tokens == \
        ["abc", "[UNK]", "\u03bb", "def"]
    align(str(corpus), teacher=minilm_path, student=student, out=tmp_path / "o", progress=False)
    rates = audit(tmp_path / "o", examples=1).unk_rates
    # teacher: [UNK] of 4 tokens; student's own: the snowman and lambda; split: [UNK] and lambda
    assert rates == {"teacher": 0.25, "student": 0.5, "split": 0.5}


def test_inspect_command(cli_env, tmp_path):
    _, out, _ = cli_env
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(out), "--examples", "1", "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert "fertility" in result.output and "UNK rates" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["examples"] > 0
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "manifest.json: missing" in result.output
    assert "Traceback" not in result.output


def test_inspect_refuses_a_replaced_tokenizer_copy(cli_env, tmp_path):
    import shutil

    _, out, _ = cli_env
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    spec = json.loads((copy / "student.tokenizer.json").read_text())
    spec["model"]["vocab"]["zzzz"] = len(spec["model"]["vocab"])
    (copy / "student.tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ShardError, match="student.tokenizer.json: does not match"):
        audit(copy)


def test_align_command_reports_user_errors_without_traceback(cli_env, tmp_path, minilm_path):
    root, _, _ = cli_env
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["align", str(empty), "--teacher", str(minilm_path), "--student",
                                      str(root / "student.json"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "error:" in result.output and "no documents" in result.output and "Traceback" not in result.output
