"""align: the cut rule, the shard files, worker and part invariance, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import train_student

from vocabshrink import _core
from vocabshrink.corpus import iter_documents
from vocabshrink.data import ShardDataset
from vocabshrink.errors import ConfigError, CorpusError, ShardError
from vocabshrink.stages.align import MANIFEST, REPORT, _Cutter, _CutSettings, align
from vocabshrink.tokenization import load_tokenizer

MAX_LEN = 64


def wordpiece_with_own_specials(files: list[str], size: int, teacher):
    """A WordPiece student whose post-processor adds its own [CLS]/[SEP] (not the teacher's ids)."""
    return train_student("wordpiece", files, size, teacher)


@pytest.fixture(scope="session")
def shard_env(tmp_path_factory, data_dir, minilm_path, minilm_tokenizer):
    root = tmp_path_factory.mktemp("align")
    valid = data_dir / "en" / "wikitext2" / "valid.txt"
    lines = valid.read_text(encoding="utf-8").splitlines(keepends=True)
    small = root / "small.txt"
    small.write_text("".join(lines[:500]), encoding="utf-8")
    student = wordpiece_with_own_specials([str(valid)], 2000, minilm_tokenizer)
    student_dir = root / "student"
    student_dir.mkdir()
    student.save(str(student_dir / "tokenizer.json"))
    bytelevel = train_student("bytelevel", [str(small)], 600)
    bl_path = root / "bytelevel.json"
    bytelevel.save(str(bl_path))
    return SimpleNamespace(root=root, valid=valid, small=small, teacher=minilm_path, student=student_dir,
                           bytelevel=bl_path)


def run_align(env, out, corpus=None, **kw):
    kw.setdefault("max_length", MAX_LEN)
    kw.setdefault("examples_per_shard", 40)
    kw.setdefault("progress", False)
    kw.setdefault("student", env.student)
    return align(str(corpus or env.small), teacher=env.teacher, out=out, **kw)


@pytest.fixture(scope="session")
def reference(shard_env):
    out = shard_env.root / "ref"
    report = run_align(shard_env, out)
    return out, report


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != REPORT}


def test_round_trip_equals_fresh_tokenization(shard_env, reference, minilm_tokenizer):
    out, report = reference
    assert report.examples > 100 and report.shards > 2 and report.forced_cuts == 0
    student = load_tokenizer(shard_env.student)
    ds = ShardDataset(out, shard_env.teacher, shard_env.student)
    assert len(ds) == report.examples
    docs = list(iter_documents([shard_env.small]))
    aligner_split = np.diff(ds.table().offsets)
    previous = None
    for i in range(len(ds)):
        item = ds[i]
        doc, c0, c1 = ds.source(i)
        text = docs[doc][c0:c1]
        t = minilm_tokenizer.encode(text)
        s = student.encode(text)
        assert item["teacher_ids"].tolist() == t.ids, (i, text)
        assert item["student_ids"].tolist() == s.ids, (i, text)
        assert len(t.ids) <= MAX_LEN and len(s.ids) <= MAX_LEN
        assert int(aligner_split[item["teacher_ids"]].sum()) <= MAX_LEN
        # the stored chunks are the core's offset chunks of the fresh tokenizations
        te, se = _core.offset_chunks(np.array([o[1] for o in t.offsets], np.int64), np.array(t.special_tokens_mask, bool),
                                     np.array([o[1] for o in s.offsets], np.int64), np.array(s.special_tokens_mask, bool))
        assert item["teacher_chunk_ends"].tolist() == te.tolist()
        assert item["student_chunk_ends"].tolist() == se.tolist()
        # examples of one document follow each other without gaps
        if previous is not None and previous[0] == doc:
            assert c0 == previous[1]
        previous = (doc, c1)


def test_long_documents_cut_at_shared_whitespace_boundaries(shard_env, tmp_path, minilm_tokenizer):
    text = " ".join(shard_env.small.read_text(encoding="utf-8").split())[:20_000].strip()  # one long document
    corpus = tmp_path / "long.txt"
    corpus.write_text(text + "\n", encoding="utf-8")
    report = run_align(shard_env, tmp_path / "out", corpus, alignment="split")
    assert report.examples > 20 and report.forced_cuts == 0 and report.dropped_characters == 0
    ds = ShardDataset(tmp_path / "out", shard_env.teacher, shard_env.student)
    assert not ds.has_chunks and ds.has_split
    spans = [ds.source(i) for i in range(len(ds))]
    assert spans[0][1] == 0 and spans[-1][2] == len(text)
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert start == end and text[end].isspace()
    # the budget binds: the examples are long, not cut needlessly short
    assert np.mean(ds.lengths("max")) > 0.8 * MAX_LEN


def fake_encoding(ids, ends):
    return SimpleNamespace(ids=list(ids), offsets=[(0, e) for e in ends])


def test_cutter_drops_a_chunk_that_cannot_fit_and_forces_cuts_inside_words():
    from tokenizers import Tokenizer, models

    blank = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).to_str()
    cfg = _CutSettings(blank, blank, None, [9], [9], [8], [8], max_length=6, offsets=True)  # budget: 4 tokens
    cutter = _Cutter(cfg)
    text = "aaaa bbbbbbbbbbbbbbbbbbbb cc"
    # teacher: 4 tokens "aaaa"; the long word has 6 teacher and 5 student tokens with no common inner boundary
    t_ends = [1, 2, 3, 4, 9, 11, 14, 17, 20, 25, 28]
    s_ends = [2, 4, 10, 13, 16, 22, 25, 28]
    doc, examples, dropped_after = cutter.cut(7, text, fake_encoding(range(11), t_ends),
                                              fake_encoding(range(8), s_ends))
    assert doc == 7 and dropped_after == 0
    spans = [(ex[5], ex[6]) for ex in examples]
    assert spans == [(0, 4), (25, 28)]
    assert examples[1][7] == 20  # the 20 letters of the long word are dropped, not given to one side only
    assert all(len(ex[0]) <= 6 and len(ex[1]) <= 6 for ex in examples)
    assert examples[0][0].tolist() == [9, 0, 1, 2, 3, 9]
    assert examples[0][2].tolist() == [1, 3, 5, 6]  # [CLS] | aa | aa | [SEP]
    assert examples[0][3].tolist() == [1, 2, 3, 4]
    # a word of 8 one-character tokens on both sides: no whitespace boundary fits, so the cut is forced
    word = "abcdefgh"
    _, examples, _ = cutter.cut(0, word, fake_encoding(range(8), range(1, 9)), fake_encoding(range(8), range(1, 9)))
    assert [(ex[5], ex[6], ex[8]) for ex in examples] == [(0, 4, True), (4, 8, False)]


def test_output_is_identical_for_any_worker_count(shard_env, reference, tmp_path):
    report = run_align(shard_env, tmp_path / "w2", workers=2)
    assert report.workers == 2
    assert folder_bytes(tmp_path / "w2") == folder_bytes(reference[0])

@pytest.mark.slow

def test_parts_are_disjoint_and_complete(shard_env, reference, tmp_path):
    folders = []
    for i in range(3):
        run_align(shard_env, tmp_path / f"part{i}", num_shards=3, shard_index=i)
        folders.append(tmp_path / f"part{i}")
    parts = [ShardDataset(f, shard_env.teacher, shard_env.student) for f in folders]
    keys = [{ds.source(j) for j in range(len(ds))} for ds in parts]
    assert all(k for k in keys)
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    whole = ShardDataset(reference[0], shard_env.teacher, shard_env.student)
    assert set().union(*keys) == {whole.source(j) for j in range(len(whole))}
    assert all(doc % 3 == i for i, k in enumerate(keys) for doc, _, _ in k)
    merged = ShardDataset(folders, shard_env.teacher, shard_env.student)
    assert len(merged) == len(whole)
    assert (merged.token_counts() == whole.token_counts()).all()
    with pytest.raises(ShardError, match="given twice"):
        ShardDataset([folders[0], folders[0]], shard_env.teacher, shard_env.student)


def test_jsonl_records_are_documents_through_align_and_parts(shard_env, tmp_path):
    """Each record is one document (blank lines inside it included), and --num-shards deals records to parts."""
    texts = [f"record {i} says hello.\n\nIts second paragraph, number {i}." for i in range(9)]
    corpus_file = tmp_path / "records.jsonl"
    corpus_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    whole = run_align(shard_env, tmp_path / "whole", corpus=corpus_file)
    assert whole.documents == 9
    ds = ShardDataset(tmp_path / "whole", shard_env.teacher, shard_env.student)
    assert sorted({ds.source(j)[0] for j in range(len(ds))}) == list(range(9))
    docs = []
    for i in range(3):
        part = run_align(shard_env, tmp_path / f"p{i}", corpus=corpus_file, num_shards=3, shard_index=i)
        ds = ShardDataset(tmp_path / f"p{i}", shard_env.teacher, shard_env.student)
        docs.append({ds.source(j)[0] for j in range(len(ds))})
        assert part.documents == 3 and docs[-1] == {d for d in range(9) if d % 3 == i}


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_shards(shard_env, tmp_path):
    kw = dict(max_length=MAX_LEN, examples_per_shard=40)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vocabshrink.cli", "align", str(shard_env.valid), "--teacher", str(shard_env.teacher),
           "--student", str(shard_env.student), "--out", str(killed), "--max-length", str(MAX_LEN),
           "--examples-per-shard", "40", "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    recorded = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            recorded = len(json.loads((killed / MANIFEST).read_text())["shards"])
        except (OSError, ValueError, KeyError):
            recorded = 0
        if recorded >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"align finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((killed / MANIFEST).read_text())
    assert not manifest["complete"] and len(manifest["shards"]) >= 3
    report = run_align(shard_env, killed, shard_env.valid, **kw)
    assert report.shards_reused >= 3
    run_align(shard_env, tmp_path / "whole", shard_env.valid, **kw)
    assert folder_bytes(killed) == folder_bytes(tmp_path / "whole")


def test_resume_redoes_a_damaged_shard_and_skips_a_complete_run(shard_env, reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference[0], copy)
    data = bytearray((copy / "shard-00001.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (copy / "shard-00001.safetensors").write_bytes(bytes(data))
    (copy / "shard-00002.safetensors.tmp").write_bytes(b"half a shard")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["complete"] = False
    (copy / MANIFEST).write_text(json.dumps(manifest))
    report = run_align(shard_env, copy)
    assert report.shards_reused == 1
    assert folder_bytes(copy) == folder_bytes(reference[0])
    again = run_align(shard_env, copy)
    assert again.shards_reused == again.shards == reference[1].shards


def test_resume_refuses_other_settings(shard_env, reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference[0], copy)
    with pytest.raises(ShardError, match="other settings"):
        run_align(shard_env, copy, max_length=MAX_LEN * 2)
    with pytest.raises(ShardError, match="other settings"):
        run_align(shard_env, copy, student=shard_env.bytelevel)
    report = run_align(shard_env, copy, max_length=MAX_LEN * 2, resume=False)
    assert report.shards_reused == 0 and report.shards < reference[1].shards
    assert not (copy / f"shard-{reference[1].shards - 1:05d}.safetensors").exists()  # stale shards are removed


def test_student_without_specials_aligns_by_offsets(shard_env, tmp_path, minilm_tokenizer):
    report = run_align(shard_env, tmp_path / "bl", student=shard_env.bytelevel)
    ds = ShardDataset(tmp_path / "bl", shard_env.teacher, shard_env.bytelevel)
    assert report.examples == len(ds) > 0
    item = ds[0]
    assert item["teacher_ids"][0] == minilm_tokenizer.token_to_id("[CLS]")
    # the student adds no specials: the teacher's [CLS] and [SEP] join the first and last chunk
    assert item["teacher_chunk_ends"][-1] == len(item["teacher_ids"])
    assert item["student_chunk_ends"][-1] == len(item["student_ids"])
    assert len(item["teacher_chunk_ends"]) == len(item["student_chunk_ends"]) > 1


def test_empty_and_bad_corpora(shard_env, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no documents"):
        run_align(shard_env, tmp_path / "e", empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\n\xff\xfe broken\n")
    with pytest.raises(CorpusError, match="line 2"):
        run_align(shard_env, tmp_path / "b", bad)
    with pytest.raises(CorpusError, match="no such file"):
        run_align(shard_env, tmp_path / "m", tmp_path / "missing.txt")


@pytest.mark.parametrize("kw, match", [
    ({"alignment": "chunks"}, "alignment"),
    ({"num_shards": 2, "shard_index": 2}, "shard-index"),
    ({"max_length": 2}, "max-length"),
    ({"workers": 0}, "workers"),
])
def test_bad_settings(shard_env, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        run_align(shard_env, tmp_path / "x", **kw)
