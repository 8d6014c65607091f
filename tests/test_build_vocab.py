"""build-vocab: each algorithm on real data, exact size, both loaders, coverage, trim map, bad inputs."""

from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vocabshrink.cli import cli
from vocabshrink.errors import ConfigError, CorpusError, TokenizerError
from vocabshrink.tokenization import fingerprint
from vocabshrink.stages.build_vocab import VocabReport, build_vocab

from conftest import bert_template, train_student

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def wikitext(data_dir) -> str:
    return str(data_dir / "en" / "wikitext2" / "valid.txt")


@pytest.fixture(scope="session")
def ruslit(data_dir) -> str:
    return str(data_dir / "ru" / "ruslit" / "valid.txt")


@pytest.fixture(scope="session")
def cased_teacher(tmp_path_factory, wikitext) -> Path:
    """A cased BERT-style teacher (WordPiece, no lowercasing, no accent stripping) with a config.json."""
    d = tmp_path_factory.mktemp("cased_teacher")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    lines = [ln for ln in Path(wikitext).read_text(encoding="utf-8").splitlines()[:1500] if ln.strip()]
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=1500, special_tokens=SPECIALS,
                                                             show_progress=False))
    bert_template(tok)
    tok.enable_padding(length=64)  # must not leak into the student
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": False, "model_max_length": 256,
        **{f"{r}_token": f"[{r.upper()}]" for r in ("pad", "unk", "cls", "sep", "mask")}}))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    return d


@pytest.fixture(scope="session")
def build(tmp_path_factory, minilm_path, cased_teacher, wikitext, ruslit):
    """build_vocab with memoised results: several tests look at the same student."""
    cache: dict = {}
    teachers = {"minilm": minilm_path, "cased": cased_teacher}
    corpora = {"wikitext": wikitext, "ruslit": ruslit}

    def run(teacher: str, corpus: str, algorithm: str | None, size: int, max_lines: int = 1500, **kw):
        key = (teacher, corpus, algorithm, size, max_lines, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{teacher}-{corpus}-{algorithm}")
            src = corpora.get(corpus, corpus)
            t = teachers.get(teacher, teacher)
            cache[key] = (out, build_vocab([src], size=size, teacher=t, out=out, algorithm=algorithm,
                                           max_lines=max_lines, progress=False, **kw))
        return cache[key]

    return run


CASES = [
    ("minilm", "wikitext", "wordpiece", 1500),
    ("minilm", "ruslit", "bpe", 1200),
    ("minilm", "ruslit", "unigram", 1200),
    ("minilm", "wikitext", "trim", 1500),
    ("cased", "wikitext", None, 1000),
    ("cased", "ruslit", "unigram", 1000),
    ("cased", "ruslit", "bpe", 1000),
    ("cased", "wikitext", "trim", 800),
]


def _sample_lines(path: str, n: int = 40) -> list[str]:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines()[:1500] if ln.strip()]
    return lines[:n]


@pytest.mark.parametrize("teacher,corpus,algorithm,size", CASES)
def test_exact_size_and_both_loaders(build, teacher, corpus, algorithm, size, wikitext, ruslit):
    from transformers import AutoTokenizer

    out, report = build(teacher, corpus, algorithm, size)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == size == report.vocab_size
    assert tok.padding is None and tok.truncation is None
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["padding"] is None and spec["truncation"] is None
    # specials first, in the teacher's order, with their roles
    assert [tok.id_to_token(i) for i in range(5)] == SPECIALS
    hf = AutoTokenizer.from_pretrained(str(out))
    assert len(hf) == size
    for role in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(hf, f"{role}_token_id") == tok.token_to_id(f"[{role.upper()}]")
    assert hf.model_max_length == (512 if teacher == "minilm" else 256)
    for line in _sample_lines(wikitext if corpus == "wikitext" else ruslit, 20) + ["Hello, World!"]:
        ids = tok.encode(line).ids
        assert ids == hf(line)["input_ids"]
        assert ids[0] == 2 and ids[-1] == 3  # the teacher's template, with the student's ids
    if teacher == "cased":
        assert spec["normalizer"]["lowercase"] is False
        assert any(any(c.isupper() for c in v) for v in tok.get_vocab())


def test_defaults_follow_the_teacher(build, minilm_path):
    out, report = build("minilm", "wikitext", "wordpiece", 1500)
    student = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    teacher = json.loads((Path(minilm_path) / "tokenizer.json").read_text(encoding="utf-8"))
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        assert student[key] == teacher[key]
    assert student["model"]["type"] == "WordPiece"
    assert student["model"]["continuing_subword_prefix"] == "##"
    _, cased_report = build("cased", "wikitext", None, 1000)
    assert cased_report.algorithm == "wordpiece"


def test_report_figures(build):
    out, report = build("minilm", "wikitext", "wordpiece", 1500)
    loaded = VocabReport.load(out / "vocab_report.json")
    assert loaded == report
    assert report.eval_source == "held-out" and report.eval_lines > 0 and report.eval_words > 0
    assert report.lines_trained == report.lines_read - report.eval_lines
    assert report.teacher_stats.vocab_size == 30522
    assert report.teacher_stats.embedding_parameters == 30522 * 384
    assert report.student_stats.embedding_parameters == 1500 * 384
    assert report.student_stats.tokens_per_word > report.teacher_stats.tokens_per_word
    assert 1.0 <= report.fertility < 3.0
    assert 0.0 < report.teacher_entries_unk_share < 0.5
    assert 1.0 <= report.split_length_mean <= report.split_length_max
    # single-character tokens, counted here from the file
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    single = sum(1 for v in vocab if v not in SPECIALS and len(v.removeprefix("##")) == 1)
    assert report.student_stats.single_char_tokens == single
    table = report.table()
    assert "single-character tokens" in table and "student tokens per teacher token" in table


def test_deterministic(tmp_path, minilm_path, wikitext):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        build_vocab([wikitext], size=1200, teacher=minilm_path, out=out, max_lines=1000, progress=False)
        outs.append((out / "tokenizer.json").read_bytes())
    assert outs[0] == outs[1]

@pytest.mark.slow

def test_unigram_and_trim_deterministic(tmp_path, build, minilm_path, ruslit, wikitext):
    for corpus, algorithm, size in (("ruslit", "unigram", 1200), ("wikitext", "trim", 1500)):
        out, _ = build("minilm", corpus, algorithm, size)
        again = tmp_path / algorithm
        build_vocab([ruslit if corpus == "ruslit" else wikitext], size=size, teacher=minilm_path, out=again,
                    algorithm=algorithm, max_lines=1500, progress=False)
        assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()


def _synthetic(path: Path, rare: str, n_lines: int = 400) -> Path:
    rng = random.Random(1)
    lines = [" ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(10))
             for _ in range(n_lines)]
    lines[7] += f" {rare}a"  # one occurrence in ~20,000 characters
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_coverage_rule(tmp_path, minilm_path):
    corpus = _synthetic(tmp_path / "c.txt", "ж")
    text = corpus.read_text(encoding="utf-8")
    counts = Counter(c for c in text if not c.isspace())
    assert counts["ж"] / sum(counts.values()) < 1e-4
    low = build_vocab([corpus], size=200, teacher=minilm_path, out=tmp_path / "low", coverage=0.9999,
                      progress=False, min_frequency=1)
    tok = Tokenizer.from_file(str(tmp_path / "low" / "tokenizer.json"))
    singles = {v for v in tok.get_vocab() if len(v) == 1}
    assert singles == set("abcdefghij")  # the characters that cover 99.99%, nothing rarer
    assert low.dropped_characters == 1 and low.alphabet_size == 10
    assert tok.encode("жa", add_special_tokens=False).tokens == ["[UNK]"]
    full = build_vocab([corpus], size=200, teacher=minilm_path, out=tmp_path / "full", coverage=1.0,
                       progress=False, min_frequency=1)
    tok = Tokenizer.from_file(str(tmp_path / "full" / "tokenizer.json"))
    assert "ж" in tok.get_vocab() and full.dropped_characters == 0
    assert "[UNK]" not in tok.encode("жa", add_special_tokens=False).tokens


def test_plain_run_reports_single_characters(build):
    _, report = build("minilm", "ruslit", "bpe", 1200)
    assert report.student_stats.single_char_tokens > 0
    assert report.alphabet_size > 30  # Cyrillic plus Latin and punctuation


def test_trim_keeps_teacher_ids(build, minilm_tokenizer, wikitext):
    out, report = build("minilm", "wikitext", "trim", 1500)
    trim_map = json.loads((out / "trim_map.json").read_text(encoding="utf-8"))
    assert trim_map["teacher_fingerprint"] == fingerprint(minilm_tokenizer) == report.teacher_fingerprint
    tmap = trim_map["student_to_teacher"]
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert len(tmap) == 1500 == len(set(tmap))
    for sid, tid in enumerate(tmap):
        assert tok.id_to_token(sid) == minilm_tokenizer.id_to_token(tid)
    assert tmap[:5] == [minilm_tokenizer.token_to_id(s) for s in SPECIALS]
    vocab = tok.get_vocab()
    for frequent in ("the", ",", ".", "of"):
        assert frequent in vocab
    # every character of a kept token is there in both forms, so words made of them never become UNK
    chars = {c for v in vocab if v not in SPECIALS for c in v.removeprefix("##")}
    for c in chars:
        for form in (c, "##" + c):
            if minilm_tokenizer.token_to_id(form) is not None:
                assert form in vocab, form
    word = "".join(sorted(chars & set("abcdefghijklmnopqrstuvwxyz")))[:12]
    assert tok.token_to_id("[UNK]") not in tok.encode(word, add_special_tokens=False).ids
    lines = _sample_lines(wikitext, 30)
    assert report.student_stats.unk_rate <= 0.01
    assert all(len(tok.encode(ln).ids) >= len(minilm_tokenizer.encode(ln).ids) for ln in lines)


def test_keep_file(tmp_path, minilm_path, wikitext):
    keep = tmp_path / "keep.txt"
    keep.write_text("zyzzyva\n##qqq\n\n", encoding="utf-8")
    report = build_vocab([wikitext], size=900, teacher=minilm_path, out=tmp_path / "o", keep=keep,
                         max_lines=800, progress=False)
    vocab = Tokenizer.from_file(str(tmp_path / "o" / "tokenizer.json")).get_vocab()
    assert len(vocab) == 900 and "zyzzyva" in vocab and "##qqq" in vocab and report.kept_tokens == 2


@pytest.mark.parametrize("kind,expected", [("bytelevel", "bpe"), ("unigram", "unigram")])
def test_teachers_of_other_families(tmp_path, wikitext, kind, expected):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    head = tmp_path / "head.txt"
    head.write_text("\n".join(_sample_lines(wikitext, 600)) + "\n", encoding="utf-8")
    train_student(kind, [str(head)], 800).save(str(teacher / "tokenizer.json"))
    report = build_vocab([wikitext], size=500, teacher=teacher, out=tmp_path / "o", max_lines=800,
                         progress=False)
    assert report.algorithm == expected and report.vocab_size == 500
    assert report.teacher_stats.embedding_parameters is None  # no config.json: no hidden size
    tok = Tokenizer.from_file(str(tmp_path / "o" / "tokenizer.json"))
    line = _sample_lines(wikitext, 3)[2]
    assert tok.decode(tok.encode(line).ids).strip() != ""
    build_vocab([wikitext], size=400, teacher=teacher, out=tmp_path / "t", max_lines=800, algorithm="trim",
                progress=False)
    trimmed = Tokenizer.from_file(str(tmp_path / "t" / "tokenizer.json"))
    text = "Quizzical zebras ~ {jump}!"
    if kind == "bytelevel":  # every byte symbol stays: nothing can be lost, only split finer
        assert trimmed.decode(trimmed.encode(text).ids).strip() == text
        with pytest.raises(ConfigError, match="--fill script needs readable tokens"):  # byte symbols, no scripts
            build_vocab([wikitext], size=400, teacher=teacher, out=tmp_path / "f", algorithm="trim", fill="script")
        assert not (tmp_path / "f").exists()


def test_shortfall_is_reported(tmp_path, minilm_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("ab ba ab ba abba\n" * 50, encoding="utf-8")
    report = build_vocab([corpus], size=400, teacher=minilm_path, out=tmp_path / "o", progress=False)
    assert report.vocab_size < 400
    assert any("supports only" in n for n in report.notes)
    assert report.eval_source == "held-out"


def test_eval_corpus(tmp_path, minilm_path, wikitext, data_dir):
    test = str(data_dir / "en" / "wikitext2" / "test.txt")
    report = build_vocab([wikitext], size=800, teacher=minilm_path, out=tmp_path / "o", max_lines=600,
                         eval_corpus=[test], eval_lines=50, progress=False)
    assert report.eval_source == "eval-corpus" and report.eval_lines == 50
    assert report.lines_trained == report.lines_read


def test_report_matches_a_direct_count(tmp_path, minilm_path, minilm_tokenizer, wikitext, data_dir):
    """The report's figures, which are measured beside the trainer, equal a plain count of the same sample."""
    import numpy as np

    from vocabshrink.aligner import Aligner

    lines = [ln for ln in (data_dir / "en" / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
             if ln.strip()][:80]
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    report = build_vocab([wikitext], size=900, teacher=minilm_path, out=out, max_lines=800,
                         eval_corpus=[sample], progress=False)
    student = Tokenizer.from_file(str(out / "tokenizer.json"))
    words = sum(len(ln.split()) for ln in lines)
    t_ids = np.concatenate([e.ids for e in minilm_tokenizer.encode_batch(lines, add_special_tokens=False)])
    s_ids = np.concatenate([e.ids for e in student.encode_batch(lines, add_special_tokens=False)])
    assert report.eval_lines == len(lines) and report.eval_words == words
    assert report.teacher_stats.tokens_per_word == pytest.approx(len(t_ids) / words)
    assert report.teacher_stats.unk_rate == pytest.approx(
        float(np.mean(t_ids == minilm_tokenizer.token_to_id("[UNK]"))))
    assert report.student_stats.tokens_per_word == pytest.approx(len(s_ids) / words)
    assert report.student_stats.unk_rate == pytest.approx(float(np.mean(s_ids == student.token_to_id("[UNK]"))))
    lengths = np.diff(Aligner(minilm_tokenizer, student).table.offsets)
    assert report.fertility == pytest.approx(float(lengths[t_ids].mean()))
    assert report.teacher_fingerprint == fingerprint(minilm_tokenizer)
    assert report.student_fingerprint == fingerprint(student)


def test_teacher_measure_failure_surfaces(tmp_path, minilm_path, wikitext, monkeypatch):
    import vocabshrink.stages.build_vocab as vocab_mod

    def broken(*args, **kwargs):
        raise RuntimeError("teacher measure broke")

    monkeypatch.setattr(vocab_mod, "_measure_teacher", broken)
    with pytest.raises(RuntimeError, match="teacher measure broke"):
        build_vocab([wikitext], size=800, teacher=minilm_path, out=tmp_path / "o", max_lines=300, progress=False)


def test_report_when_the_trainer_leaves_the_stream_unfinished(tmp_path, minilm_path, wikitext, monkeypatch):
    """A consumer that stops early never triggers the end-of-stream hook; the teacher is measured anyway, on the
    held-out lines read so far."""
    import itertools

    import vocabshrink.stages.build_vocab as vocab_mod

    real_train = vocab_mod._train

    def first_batch_only(t, layout, algorithm, stream, *args, **kwargs):
        return real_train(t, layout, algorithm, iter(list(itertools.islice(stream, 1))), *args, **kwargs)

    monkeypatch.setattr(vocab_mod, "_train", first_batch_only)
    monkeypatch.setattr(vocab_mod, "_BATCH", 100)
    report = build_vocab([wikitext], size=600, teacher=minilm_path, out=tmp_path / "o", max_lines=2000,
                         eval_lines=40, progress=False)
    assert report.eval_source == "held-out" and 1 <= report.eval_lines < 40
    assert report.teacher_stats.tokens_per_word > 0 and report.eval_words > 0


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path, minilm_path):
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        build_vocab([tmp_path / "nope.txt"], size=100, teacher=minilm_path, out=tmp_path / "o")


def test_empty_corpus(tmp_path, minilm_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty"):
        build_vocab([empty], size=100, teacher=minilm_path, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "tokenizer.json").exists()


def test_invalid_utf8(tmp_path, minilm_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line here\nbad \xff\xfe line\n" + b"more words here\n" * 30)
    with pytest.raises(CorpusError, match=r"bad.txt, line 2: invalid UTF-8"):
        build_vocab([bad], size=60, teacher=minilm_path, out=tmp_path / "o", progress=False)
    report = build_vocab([bad], size=60, teacher=minilm_path, out=tmp_path / "o", errors="replace",
                         progress=False, min_frequency=1)
    assert report.lines_read == 32


def test_size_smaller_than_specials(tmp_path, minilm_path, wikitext):
    for size in (3, 5):
        with pytest.raises(ConfigError, match="special tokens"):
            build_vocab([wikitext], size=size, teacher=minilm_path, out=tmp_path / "o")


def test_size_too_small_for_alphabet(tmp_path, minilm_path, wikitext):
    with pytest.raises(ConfigError, match="lower --coverage or raise --size"):
        build_vocab([wikitext], size=40, teacher=minilm_path, out=tmp_path / "o", max_lines=300, progress=False)


def test_unknown_teacher(tmp_path, wikitext):
    with pytest.raises(TokenizerError, match="no-such-teacher"):
        build_vocab([wikitext], size=100, teacher=tmp_path / "no-such-teacher", out=tmp_path / "o")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text('{"model": {"type": "WordPiece"', encoding="utf-8")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        build_vocab([wikitext], size=100, teacher=broken, out=tmp_path / "o")


def test_missing_keep_file(tmp_path, minilm_path, wikitext):
    with pytest.raises(ConfigError, match="keep.txt: --keep file not found"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", keep=tmp_path / "keep.txt")


def test_bad_options(tmp_path, minilm_path, wikitext, build):
    with pytest.raises(ConfigError, match="algorithm"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", algorithm="sentencepiece")
    with pytest.raises(ConfigError, match="coverage"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", coverage=0)
    keep = tmp_path / "k.txt"
    keep.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--keep is not supported"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", algorithm="bpe", keep=keep)
    uni_teacher, _ = build("cased", "ruslit", "unigram", 1000)
    with pytest.raises(ConfigError, match="wordpiece needs"):
        build_vocab([wikitext], size=100, teacher=uni_teacher, out=tmp_path / "o", algorithm="wordpiece")
    with pytest.raises(ConfigError, match="--fill must be one of none, script"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", algorithm="trim", fill="all")
    with pytest.raises(ConfigError, match="--fill applies to --algorithm trim"):
        build_vocab([wikitext], size=100, teacher=minilm_path, out=tmp_path / "o", fill="script")
    assert not (tmp_path / "o").exists()


def test_main_scripts():
    from collections import Counter

    from vocabshrink.stages.build_vocab import main_scripts

    # 1 Latin letter in 20 is under the 10% share: a Russian text quoting French stays Cyrillic
    assert main_scripts(Counter({"а": 60, "б": 35, "e": 5, " ": 50, "1": 9})) == {"CYRILLIC"}
    assert main_scripts(Counter({"а": 50, "e": 50})) == {"CYRILLIC", "LATIN"}
    assert main_scripts(Counter({"1": 3, ".": 2})) == set()


def test_corpus_alphabet_leaves_out_stray_letters():
    """A letter of a main script is in, in both cases, when it (either case) makes at least 1 in 100,000 of the
    letters."""
    from collections import Counter

    from vocabshrink.stages.build_vocab import corpus_alphabet

    counts = Counter({"а": 600_000, "б": 399_980, "Ё": 5, "ё": 10, "і": 9, "e": 10_000, "1": 7})
    # "ё"+"Ё" 15 of 1,010,004 letters: in; Ukrainian "і" 9: under 10.1; Latin under the script share
    assert corpus_alphabet(counts) == {"а", "б", "ё", "А", "Б", "Ё"}  # a frequent letter in both cases


def test_trim_fill_takes_unseen_tokens_of_the_corpus_script(tmp_path, minilm_path, minilm_tokenizer, wikitext):
    """A corpus that uses fewer teacher tokens than --size: --fill script tops it up to exactly --size with
    tokens it never used, written in its own script (Latin here: no CJK, Cyrillic or [unused] slots), in the
    teacher's vocabulary order; without --fill the vocabulary stays short."""
    lines = _sample_lines(wikitext, 200)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # every line trains (the report reads the same file): the trim counts exactly the tokens of `lines`
    short = build_vocab([corpus], size=4000, teacher=minilm_path, out=tmp_path / "plain", algorithm="trim",
                        eval_corpus=[corpus], progress=False)
    full = build_vocab([corpus], size=4000, teacher=minilm_path, out=tmp_path / "fill", algorithm="trim",
                       fill="script", eval_corpus=[corpus], progress=False)
    assert short.vocab_size < 4000 == full.vocab_size
    assert any("scripts LATIN (" in n for n in full.notes)
    used = {t for e in minilm_tokenizer.encode_batch(lines, add_special_tokens=False) for t in e.tokens}
    plain = set(Tokenizer.from_file(str(tmp_path / "plain" / "tokenizer.json")).get_vocab())
    filled = set(Tokenizer.from_file(str(tmp_path / "fill" / "tokenizer.json")).get_vocab())
    added = filled - plain
    assert plain < filled and len(added) == 4000 - short.vocab_size and not added & used
    letters = {c for tok in added for c in tok.removeprefix("##") if c.isalpha()}
    assert letters and all(unicodedata.name(c).startswith("LATIN") for c in letters)
    assert not any(tok.startswith("[unused") for tok in added)
    teacher_vocab = minilm_tokenizer.get_vocab()
    # vocabulary order (a WordPiece teacher has no scores): no token that needed only its own slot is skipped
    # before the last one added
    last = max(teacher_vocab[t] for t in added if len(t.removeprefix("##")) > 1)  # not a character it needed

    grams = {w[i:i + n] for t in used for w in [t.removeprefix("##")] for n in (2, 3) for i in range(len(w) - n + 1)}

    def one_slot(tok: str) -> bool:  # and written like the corpus: its runs of 2-3 letters occur in used tokens
        word = tok.removeprefix("##")
        runs = {word[i:i + n] for n in (2, 3) for i in range(len(word) - n + 1)}
        return (word.isascii() and word.isalpha() and all(c in filled and "##" + c in filled for c in word)
                and runs <= grams)

    assert not [t for t, i in teacher_vocab.items() if i < last and t not in filled and one_slot(t)]


# ---------------------------------------------------------------- CLI and corpus forms


def test_cli_jsonl_gz_folder_and_stdin(tmp_path, minilm_path, wikitext):
    import gzip

    lines = _sample_lines(wikitext, 300)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    with gzip.open(folder / "sub" / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        for ln in lines[:150]:
            fh.write(json.dumps({"body": ln}) + "\n")
    (folder / "b.txt").write_text("\n".join(lines[150:]) + "\n", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(cli, ["build-vocab", str(folder), "--teacher", str(minilm_path), "--size", "700",
                              "--out", str(tmp_path / "o1"), "--text-field", "body", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "single-character tokens" in res.output
    report = VocabReport.load(tmp_path / "o1" / "vocab_report.json")
    assert report.lines_read == 300 and report.vocab_size == 700
    res = runner.invoke(cli, ["build-vocab", "-", "--teacher", str(minilm_path), "--size", "700",
                              "--out", str(tmp_path / "o2"), "--no-progress"],
                        input="\n".join(lines[150:] + lines[:150]) + "\n")  # the folder's order: b.txt, sub/
    assert res.exit_code == 0, res.output
    assert VocabReport.load(tmp_path / "o2" / "vocab_report.json").lines_read == 300
    # same text, same tokenizer, whatever the container
    assert (tmp_path / "o1" / "tokenizer.json").read_bytes() == (tmp_path / "o2" / "tokenizer.json").read_bytes()
    res = runner.invoke(cli, ["build-vocab", "-", "--teacher", str(minilm_path), "--size", "700",
                              "--out", str(tmp_path / "o3"), "--no-progress"], input="\n \n")
    assert res.exit_code == 1 and "error: -: the corpus is empty" in res.output


def test_cli_help_and_errors(tmp_path, minilm_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["build-vocab", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "--coverage" in res.output
    res = runner.invoke(cli, ["build-vocab", str(tmp_path / "missing.txt"), "--teacher", str(minilm_path),
                              "--size", "100", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "missing.txt: no such file" in res.output
    assert "Traceback" not in res.output


def test_nfd_input_matches_nfc(tmp_path, minilm_path):
    """Accents are stripped by the teacher's normalizer before the alphabet is chosen."""
    text = "café naïve résumé déjà vu " * 40
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join([text, unicodedata.normalize("NFD", text)] * 20), encoding="utf-8")
    build_vocab([corpus], size=80, teacher=minilm_path, out=tmp_path / "o", progress=False, min_frequency=1)
    vocab = Tokenizer.from_file(str(tmp_path / "o" / "tokenizer.json")).get_vocab()
    assert "é" not in vocab and "e" in vocab
