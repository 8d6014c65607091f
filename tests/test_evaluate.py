"""evaluate: small models built here (fast), the MiniLM teacher, report files and plots, bad input."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
from click.testing import CliRunner  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModel, BertForMaskedLM, BertModel  # noqa: E402

from conftest import bert_template, tiny_bert  # noqa: E402
from vocabshrink.cli import cli  # noqa: E402
from vocabshrink.errors import ConfigError, CorpusError, ModelError  # noqa: E402
from vocabshrink.stages.evaluate import (  # noqa: E402
    EvalReport,
    evaluate,
    parse_task,
    read_labeled,
    read_metrics,
    read_sts,
)

pytestmark = pytest.mark.slow  # models, speed runs and plots: `make test-fast` leaves them out


@contextlib.contextmanager
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared, busy CI core every op would wait for a peer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, minilm_path) -> Path:
    """A 32-wide BertModel (no MLM head) with the MiniLM tokenizer."""
    out = tmp_path_factory.mktemp("teacher")
    tiny_bert(30522, 32, seed=1, mlm=False).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(minilm_path / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, wordpiece_student) -> Path:
    """A 16-wide BertForMaskedLM on a 3K WordPiece vocabulary, with a projection into the teacher's 32 dims."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("student")
    model = tiny_bert(wordpiece_student.get_vocab_size(), 16, seed=2, pad=wordpiece_student.token_to_id("[PAD]"))
    model.config.vocabshrink_projection = {"file": "projection.safetensors", "in_features": 16, "out_features": 32,
                                           "embedding_key": "s2_t2"}
    model.save_pretrained(out)
    tok = bert_template(Tokenizer.from_str(wordpiece_student.to_str()))
    tok.save(str(out / "tokenizer.json"))
    g = torch.Generator().manual_seed(3)
    save_file({"maps.s1_t1.weight": torch.randn(32, 16, generator=g), "maps.s1_t1.bias": torch.zeros(32),
               "maps.s2_t2.weight": torch.randn(32, 16, generator=g), "maps.s2_t2.bias": torch.randn(32, generator=g)},
              str(out / "projection.safetensors"))
    return out


@pytest.fixture(scope="session")
def slices(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Small slices of the real data: STS-B dev, SST-2 train/test, WikiText-2 valid; and a separable toy task."""
    out = tmp_path_factory.mktemp("data")
    lines = (data_dir / "en" / "stsb" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (out / "sts.tsv").write_text("\n".join(lines[:121]) + "\n", encoding="utf-8")
    for part, n in (("train", 301), ("test", 101)):
        lines = (data_dir / "en" / "sst2" / f"{part}.tsv").read_text(encoding="utf-8").splitlines()
        (out / f"sst2-{part}.tsv").write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    with open(data_dir / "en" / "wikitext2" / "valid.txt", encoding="utf-8") as fh:
        (out / "valid.txt").write_text("".join(next(fh) for _ in range(120)), encoding="utf-8")
    rng = random.Random(0)
    filler = "the a of we saw it there today with some very nice old new".split()
    words = {"fruit": "apple banana cherry grape lemon".split(), "vehicle": "car truck bus train bicycle".split()}
    for part, n in (("train", 120), ("test", 60)):
        rows = ["text\tlabel"]
        for i in range(n):
            label = "fruit" if i % 2 else "vehicle"
            toks = rng.sample(filler, 5) + rng.sample(words[label], 2)
            rng.shuffle(toks)
            rows.append(f"{' '.join(toks)}\t{label}")
        (out / f"toy-{part}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def small_report(tmp_path_factory, tiny_teacher, tiny_student, slices) -> EvalReport:
    run = tmp_path_factory.mktemp("run")
    records = [{"step": s, "loss": 5.0 / s, "loss_mlm": 4.0 / s, "lr": 1e-4} for s in range(1, 11)]
    records.append({"step": 10, "eval_mlm_loss": 0.9, "eval_mlm_accuracy": 0.2, "eval_teacher_agreement": 0.5})
    text = "\n".join(json.dumps(r) for r in records) + '\n{"step": 11, "lo'  # a run killed mid-write
    (run / "metrics.jsonl").write_text(text, encoding="utf-8")
    with _one_thread():
        return evaluate(teacher=tiny_teacher, student=tiny_student, out=tmp_path_factory.mktemp("report"),
                        corpus=[slices / "valid.txt"], sts=[slices / "sts.tsv"],
                        tasks=[f"toy={slices / 'toy-train.tsv'},{slices / 'toy-test.tsv'}",
                               ("sst2", str(slices / "sst2-train.tsv"), str(slices / "sst2-test.tsv"))],
                        run=run, speed_shapes=((1, 16), (2, 16)), warmup=0, repeats=1, threads=1, batch_size=16,
                        max_length=64, max_sentences=50)


def _hand_embed(model_dir: Path, sentences: list[str], max_length: int = 64) -> np.ndarray:
    """Mean pooling written out independently: HF fast tokenizer, padding, masked mean."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), pad_token="[PAD]")
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), 32):
            enc = tok(sentences[i:i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_size_counts_match_the_models(small_report, tiny_teacher, tiny_student):
    t = BertModel.from_pretrained(tiny_teacher)
    s = BertForMaskedLM.from_pretrained(tiny_student).bert
    size = small_report.size
    assert size["teacher"].params_m == pytest.approx(sum(p.numel() for p in t.parameters()) / 1e6)
    assert size["student"].params_m == pytest.approx(sum(p.numel() for p in s.parameters()) / 1e6)
    assert size["teacher"].vocab_k == pytest.approx(30.522)
    assert size["student"].hidden == 16 and size["teacher"].layers == 2
    assert size["teacher"].disk_mb == pytest.approx((tiny_teacher / "model.safetensors").stat().st_size / 2**20)
    assert small_report.size_ratio["params"] == pytest.approx(size["teacher"].params_m / size["student"].params_m)


def test_speed_rows_and_method(small_report):
    rows = [r for r in small_report.speed if r.device == "cpu"]
    assert [(r.batch, r.seq_len) for r in rows] == [(1, 16), (2, 16)]
    for r in rows:
        assert r.teacher_ms > 0 and r.student_ms > 0 and r.teacher_peak_mb > 0 and r.student_peak_mb > 0
        assert r.speedup == pytest.approx(r.teacher_ms / r.student_ms)
    assert "median of 1 timed" in small_report.speed_method and "warm-up" in small_report.speed_method


def test_sts_matches_an_independent_computation(small_report, tiny_teacher, tiny_student, slices):
    from safetensors.numpy import load_file

    a, b, gold = read_sts(slices / "sts.tsv")
    assert len(a) == 120
    (r,) = small_report.sts
    t = _hand_embed(tiny_teacher, a + b)
    s = _hand_embed(tiny_student, a + b)
    assert r.pairs == 120
    assert r.teacher == pytest.approx(spearmanr(_cos(t[:120], t[120:]), gold).statistic, abs=1e-4)
    assert r.student == pytest.approx(spearmanr(_cos(s[:120], s[120:]), gold).statistic, abs=1e-4)
    proj = load_file(str(tiny_student / "projection.safetensors"))
    p = s @ proj["maps.s2_t2.weight"].T + proj["maps.s2_t2.bias"]  # the key named in config.json, not s1_t1
    assert r.student_projected == pytest.approx(spearmanr(_cos(p[:120], p[120:]), gold).statistic, abs=1e-4)
    assert r.retention == pytest.approx(r.student / r.teacher)
    assert 0.5 < r.tfidf < 1.0  # lexical overlap carries real signal on STS-B
    # drop-in: the student's projected first sentences against the teacher's second sentences
    assert r.cross_model == pytest.approx(spearmanr(_cos(p[:120], t[120:]), gold).statistic, abs=1e-4)


def test_drop_in_retrieval(small_report):
    q = small_report.retrieval
    assert q is not None and q.k == 10 and 20 <= q.queries <= 50
    assert all(0.0 <= x <= 1.0 for x in (q.teacher_recall, q.student_recall, q.tfidf_recall))
    assert "## Drop-in" in (Path(small_report.out) / "report.md").read_text(encoding="utf-8")


def test_recall_at_k_by_hand():
    from vocabshrink.stages.evaluate import _recall

    docs = np.eye(4)
    queries = np.array([[1.0, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0.2], [0, 0, 0.1, 1.0]])
    # query 1 finds document 2 first and its own (1) after all the others
    assert _recall(queries, docs, 1) == 0.75
    assert _recall(queries, docs, 4) == 1.0


def test_probe_on_a_separable_task_is_accurate(small_report):
    toy, sst2 = small_report.tasks
    assert (toy.name, toy.train_examples, toy.test_examples, toy.labels) == ("toy", 120, 60, 2)
    # the tiny student is random over a vocabulary the WordPiece trainer numbers in hash order, so its accuracy
    # moves from run to run (0.87 and 1.0 seen): well above chance (0.5) is what a working probe shows
    assert toy.teacher >= 0.9 and toy.student >= 0.75 and toy.tfidf >= 0.9
    assert (sst2.train_examples, sst2.test_examples) == (300, 100)
    assert all(0.0 <= x <= 1.0 for x in (sst2.teacher, sst2.student, sst2.tfidf))


def test_fidelity(small_report):
    f = small_report.fidelity
    assert f.sentences == 50
    assert -1.0 <= f.teacher_agreement <= 1.0
    assert f.masked_tokens > 0 and 0.0 <= f.student_mlm_accuracy <= 1.0
    assert f.teacher_mlm_accuracy is None  # a BertModel teacher has no MLM head
    hist = small_report.fertility["histogram"]
    assert list(hist) == ["1", "2", "3", "4", "5", "6+"] and sum(hist.values()) == pytest.approx(1.0)


def test_report_files_and_plots(small_report):
    import matplotlib.image

    out = Path(small_report.out)
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data == json.loads(small_report.to_json())
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Size", "## Speed and memory", "## Fidelity", "## Semantic similarity", "## Linear probes"):
        assert heading in md
    names = sorted(Path(p).name for p in small_report.plots)
    assert names == ["fertility.png", "loss_curves.png", "quality.png", "size_speed.png"]
    for p in small_report.plots:
        img = matplotlib.image.imread(p)
        assert img.shape[0] > 300 and img.shape[1] > 500


def test_minilm_against_itself_and_an_independent_pipeline(tmp_path, minilm_path, data_dir):
    """The real teacher: STS-B Spearman as computed by plain transformers; a model agrees fully with itself."""
    lines = (data_dir / "en" / "stsb" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "sts.tsv").write_text("\n".join(lines[:101]) + "\n", encoding="utf-8")
    a, b, gold = read_sts(tmp_path / "sts.tsv")
    with _one_thread():
        rep = evaluate(teacher=minilm_path, student=minilm_path, out=tmp_path / "r", corpus=[tmp_path / "sts.tsv"],
                       sts=[tmp_path / "sts.tsv"], speed=False, plots=False, max_sentences=20, max_length=128)
        e = _hand_embed(minilm_path, a + b, max_length=128)
    expected = spearmanr(_cos(e[:100], e[100:]), gold).statistic
    (r,) = rep.sts
    assert r.teacher == pytest.approx(expected, abs=1e-4) and r.student == r.teacher
    assert r.retention == 1.0 and r.student_projected is None and r.cross_model == pytest.approx(r.teacher)
    assert r.teacher > 0.75  # 0.867 on the whole dev set
    assert rep.fidelity.teacher_agreement == pytest.approx(1.0)
    assert rep.fidelity.student_mlm_accuracy is None  # MiniLM ships without an MLM head
    assert rep.size_ratio["params"] == 1.0


# ----------------------------------------------------------------------------- readers and bad input


def test_read_labeled_and_parse_task(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("id\tsentence\tlabel\n1\tgood film\t1\n2\tbad film\t0\n", encoding="utf-8")
    assert read_labeled(f) == (["good film", "bad film"], ["1", "0"])
    assert parse_task("sst2=a.tsv,b.tsv") == ("sst2", "a.tsv", "b.tsv")
    for bad in ("sst2", "sst2=a.tsv", "=a,b", "x=a,b,c", "x=a,"):
        with pytest.raises(ConfigError, match="NAME=TRAIN.tsv,TEST.tsv"):
            parse_task(bad)
    f.write_text("sentence\tlabel\nonly one field\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2"):
        read_labeled(f)


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "lo', encoding="utf-8")
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    with pytest.raises(ConfigError, match="metrics.jsonl"):
        read_metrics(tmp_path / "nowhere")


def _quick(teacher, student, out, **kw):
    with _one_thread():
        return evaluate(teacher=teacher, student=student, out=out, speed=False, plots=False, **kw)


def test_bad_sts_and_task_files(tmp_path, tiny_teacher, tiny_student):
    with pytest.raises(CorpusError, match="missing.tsv: no such file"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", sts=[tmp_path / "missing.tsv"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tc\nx\ty\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="sentence1, sentence2, score"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", sts=[bad])
    bad.write_text("sentence1\tsentence2\tscore\nx\ty\tnot-a-number\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="bad.tsv, line 2"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", sts=[bad])
    bad.write_bytes(b"sentence1\tsentence2\tscore\n\xff\xfe\t1\t2\n")
    with pytest.raises(CorpusError, match="invalid UTF-8"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", sts=[bad])
    one = tmp_path / "one.tsv"
    one.write_text("sentence\tlabel\ngood\t1\nfine\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="single label"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", tasks=[f"t={one},{one}"])
    with pytest.raises(ConfigError, match="NAME=TRAIN"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", tasks=["oops"])


def test_bad_corpus(tmp_path, tiny_teacher, tiny_student):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", corpus=[empty])
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(CorpusError, match="latin.txt, line 1"):
        _quick(tiny_teacher, tiny_student, tmp_path / "o", corpus=[latin])


def test_bad_models(tmp_path, tiny_teacher, tiny_student, wordpiece_student):
    with pytest.raises(ModelError, match="nowhere"):
        _quick(tiny_teacher, tmp_path / "nowhere", tmp_path / "o")
    # A student whose tokenizer is not its own: more tokens than embeddings.
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_student, wrong)
    shutil.copy2(tiny_teacher / "tokenizer.json", wrong / "tokenizer.json")
    with pytest.raises(ModelError, match="do not belong together"):
        _quick(tiny_teacher, wrong, tmp_path / "o")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_student, corrupt)
    (corrupt / "projection.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="projection.safetensors"):
        _quick(tiny_teacher, corrupt, tmp_path / "o")
    (corrupt / "projection.safetensors").unlink()  # described in config.json, but gone
    with pytest.raises(ModelError, match="file is missing"):
        _quick(tiny_teacher, corrupt, tmp_path / "o")


def test_cli(tmp_path, tiny_teacher, tiny_student, slices):
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", "--teacher", str(tiny_teacher), "--student", str(tiny_student),
                              "--out", str(tmp_path / "o"), "--sts", str(slices / "sts.tsv"), "--no-speed",
                              "--no-plots", "--max-length", "32"])
    assert res.exit_code == 0, res.output
    assert "## Semantic similarity" in res.output and (tmp_path / "o" / "report.json").exists()
    res = runner.invoke(cli, ["evaluate", "--teacher", str(tiny_teacher), "--student", str(tiny_student),
                              "--out", str(tmp_path / "o"), "--speed-shape", "16by512"])
    assert res.exit_code == 1 and "BATCHxLENGTH" in res.output
    res = runner.invoke(cli, ["evaluate", "--teacher", str(tiny_teacher), "--student", str(tiny_student),
                              "--out", str(tmp_path / "o"), "--task", "nope"])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
