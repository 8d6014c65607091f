"""Corpus reading: files, folders, globs, .gz, .jsonl, stdin; UTF-8 errors with file and line."""

from __future__ import annotations

import gzip
import io
import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocabshrink import corpus
from vocabshrink.corpus import iter_documents, iter_line_blocks, iter_lines, require_text, resolve_paths
from vocabshrink.errors import CorpusError


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("b1\nb2\n", encoding="utf-8")
    (tmp_path / "d" / "sub" / "a.txt").write_text("a1\n", encoding="utf-8")
    (tmp_path / "d" / "image.png").write_bytes(b"\x89PNG")
    with gzip.open(tmp_path / "d" / "sub" / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "c1"}) + "\n\n" + json.dumps({"text": "c2", "id": 2}) + "\n")
    return tmp_path


def test_folder_is_recursive_sorted_and_text_only(tree):
    files = resolve_paths([tree / "d"])
    assert [f.replace(str(tree), "") for f in files] == ["/d/b.txt", "/d/sub/a.txt", "/d/sub/c.jsonl.gz"]
    assert list(iter_lines([tree / "d"])) == ["b1", "b2", "a1", "c1", "c2"]


def test_glob_and_stdin(tree, monkeypatch):
    assert list(iter_lines([str(tree / "d" / "**" / "*.txt")])) == ["b1", "b2", "a1"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x\r\ny\n")))
    assert list(iter_lines(["-"])) == ["x", "y"]


def test_missing_inputs(tmp_path):
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        resolve_paths([tmp_path / "nope.txt"])
    with pytest.raises(CorpusError, match="matches no file"):
        resolve_paths([str(tmp_path / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="folder holds no text files"):
        resolve_paths([tmp_path / "empty"])
    with pytest.raises(CorpusError, match="no corpus given"):
        resolve_paths([])


def test_invalid_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nalso ok\nbad \xc3\x28 here\n")
    with pytest.raises(CorpusError, match=r"bad.txt, line 3: invalid UTF-8 at byte 4"):
        list(iter_lines([bad]))
    assert list(iter_lines([bad], errors="replace"))[2] == "bad \ufffd( here"
    with pytest.raises(CorpusError, match="errors must be"):
        list(iter_lines([bad], errors="ignore"))


@pytest.mark.parametrize("block", [3, 1 << 22])
def test_jsonl_field_and_bad_records(tmp_path, monkeypatch, block):
    monkeypatch.setattr(corpus, "_BLOCK", block)
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"body": "one"}) + "\n" + json.dumps({"body": "two"}) + "\n", encoding="utf-8")
    assert list(iter_lines([f], text_field="body")) == ["one", "two"]
    with pytest.raises(CorpusError, match=r"x.jsonl, line 1: no string field 'text'"):
        list(iter_lines([f]))
    f.write_text('{"text": "ok"}\n\n{"text": "also"}\n{broken\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"x.jsonl, line 4: not valid JSON"):
        list(iter_lines([f]))


@pytest.mark.parametrize("block", [3, 1 << 22])
@pytest.mark.parametrize("split", ["blank", "line"])
def test_a_jsonl_record_is_one_document(tmp_path, monkeypatch, block, split):
    """Records are never joined, and blank lines inside a record never split it."""
    monkeypatch.setattr(corpus, "_BLOCK", block)
    texts = ["first record", "second\n\nwith a blank line", "third"]
    f = tmp_path / "x.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    assert list(iter_documents([f], split=split)) == texts


def test_sentence_split():
    from vocabshrink.corpus import split_sentences

    assert split_sentences('He left. She stayed! Did it? "Yes." Then 3 more. a b. ok') == [
        "He left.", "She stayed!", "Did it?", '"Yes."', "Then 3 more. a b. ok"]
    assert split_sentences("Он ушёл. Она осталась… «Да». вот") == ["Он ушёл.", "Она осталась…", "«Да». вот"]
    assert split_sentences("  ") == [] and split_sentences("no end") == ["no end"]


def test_sentence_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("One. Two!\n\nThree? Four.\n", encoding="utf-8")
    assert list(iter_documents([f], split="sentence")) == ["One.", "Two!", "Three?", "Four."]
    with pytest.raises(CorpusError, match="split must be one of blank, line, sentence"):
        list(iter_documents([f], split="word"))


def test_no_document_spans_two_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo", encoding="utf-8")
    (tmp_path / "b.txt").write_text("three\n\nfour\n", encoding="utf-8")
    assert list(iter_documents([tmp_path / "a.txt", tmp_path / "b.txt"])) == ["one\ntwo", "three", "four"]


def test_corrupt_gzip(tmp_path):
    f = tmp_path / "x.txt.gz"
    f.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="x.txt.gz: read failed"):
        list(iter_lines([f]))


def _reference_lines(data: bytes, errors: str) -> list[str] | tuple[int, int]:
    """Line by line, as a reader with no blocks would: the lines, or (line, byte) of the first bad UTF-8."""
    out = []
    for lineno, raw in enumerate(io.BytesIO(data), start=1):
        try:
            out.append(raw.decode("utf-8", errors=errors).rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            return lineno, exc.start
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from([b"a", b"bc", b" ", b"\n", b"\r\n", b"\r", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
                                       b"\xc3", b"\xff"]), max_size=60),
       block=st.integers(1, 9), errors=st.sampled_from(["strict", "replace"]))
def test_blocks_match_line_by_line_reading(tmp_path, monkeypatch, parts, block, errors):
    """Tiny blocks put block edges everywhere: inside lines, inside characters, between \r and \n."""
    data = b"".join(parts)
    f = tmp_path / "x.txt"
    f.write_bytes(data)
    monkeypatch.setattr(corpus, "_BLOCK", block)
    expected = _reference_lines(data, errors)
    if isinstance(expected, tuple):
        with pytest.raises(CorpusError, match=rf"x.txt, line {expected[0]}: invalid UTF-8 at byte {expected[1]} "):
            list(iter_lines([f], errors=errors))
    else:
        assert list(iter_lines([f], errors=errors)) == expected
        assert [ln for blk in iter_line_blocks([f], errors=errors) for ln in blk] == expected
        assert list(iter_lines([f], errors=errors, max_lines=3)) == expected[:3]


def test_max_lines_spans_files(tree):
    assert list(iter_lines([tree / "d"], max_lines=3)) == ["b1", "b2", "a1"]


def test_documents(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a\nb\n\n\nc\n  \nd\n", encoding="utf-8")
    assert list(iter_documents([f])) == ["a\nb", "c", "d"]
    assert list(iter_documents([f], split="line")) == ["a", "b", "c", "d"]
    with pytest.raises(CorpusError, match="split must be"):
        list(iter_documents([f], split="para"))


def test_require_text(tmp_path):
    assert list(require_text(["", "x"], "c")) == ["", "x"]
    with pytest.raises(CorpusError, match="c: the corpus is empty"):
        list(require_text(["", "  "], "c"))
