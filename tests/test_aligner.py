"""Aligner on real tokenizers: the MiniLM teacher and students trained by `tokenizers` on real text."""

from __future__ import annotations

import numpy as np
import pytest

from vocabshrink import Aligner, _core
from vocabshrink import _reference as ref
from vocabshrink.aligner import Alignment
from vocabshrink.errors import TokenizerError
from vocabshrink.tokenization import detect_scheme, fingerprint, load_tokenizer

from conftest import train_student


@pytest.fixture(scope="session")
def students(data_dir, minilm_tokenizer):
    files = [str(data_dir / "en" / "wikitext2" / "valid.txt")]
    return {
        "wordpiece": train_student("wordpiece", files, 2000, minilm_tokenizer),
        "bytelevel": train_student("bytelevel", files, 2000),
        "unigram": train_student("unigram", files, 2000),
    }


@pytest.fixture(scope="session")
def aligners(minilm_tokenizer, students):
    return {k: Aligner.from_tokenizers(minilm_tokenizer, s) for k, s in students.items()}


def test_schemes_are_detected(aligners):
    assert aligners["wordpiece"].teacher_scheme.name == "wordpiece"
    assert aligners["wordpiece"].student_scheme.name == "wordpiece"
    assert aligners["bytelevel"].student_scheme.name == "bytelevel"
    assert aligners["unigram"].student_scheme.name == "metaspace"


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel", "unigram"])
def test_pieces_rebuild_the_teacher_surface(aligners, kind):
    """Unless a teacher token maps to UNK (or is special), its student pieces spell its surface."""
    a = aligners[kind]
    tt, st_ = a.teacher_scheme, a.student_scheme
    unk = a.student_roles.get("unk")
    specials = set(a.teacher_roles.values())
    checked = 0
    for tid, token in enumerate(a.teacher_vocab):
        pieces = a.split(tid)
        assert pieces, tid
        if pieces == [unk] or tid in specials or token.startswith("[unused"):
            continue
        surface, word_start, _ = _core.parse_token(token, tt.name, tt.continuation_prefix)
        rebuilt = []
        for k, p in enumerate(pieces):
            text, start, ok = _core.parse_token(a.student_vocab[p], st_.name, st_.continuation_prefix,
                                                st_.metaspace_replacement)
            assert ok
            assert start == (word_start and k == 0), (token, [a.student_vocab[q] for q in pieces])
            rebuilt.append(text)
        assert b"".join(rebuilt) == surface, (token, [a.student_vocab[q] for q in pieces])
        checked += 1
    assert checked > 20000  # most of the 30,522 teacher tokens are checked, not skipped


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel", "unigram"])
def test_table_equals_reference_on_real_vocabularies(aligners, kind):
    a = aligners[kind]
    st_, tt = a.student_scheme, a.teacher_scheme
    from vocabshrink.tokenization import special_ids

    pyref = ref.ReferenceSplitter(a.student_vocab, st_.name, st_.continuation_prefix, st_.metaspace_replacement,
                                  a.student_roles.get("unk", -1), special_ids(a.student_tokenizer))
    forced = np.full(len(a.teacher_vocab), -1, dtype=np.int32)
    for tid in range(len(a.teacher_vocab)):
        # the forced entries are whatever the aligner decided for specials and unused slots
        token = a.teacher_vocab[tid]
        if tid in a.teacher_roles.values() or token.startswith("[unused"):
            forced[tid] = a.table.ids[a.table.offsets[tid]]
    offsets, ids = ref.build_split_table(pyref, a.teacher_vocab, tt.name, tt.continuation_prefix,
                                         tt.metaspace_replacement, forced)
    np.testing.assert_array_equal(a.table.offsets, offsets)
    np.testing.assert_array_equal(a.table.ids, ids)


def test_specials_map_by_role(aligners):
    for kind, a in aligners.items():
        roles = a.teacher_roles
        sv = a.student_vocab
        assert sv[a.split(roles["cls"])[0]] in ("[CLS]", "<s>"), kind
        assert sv[a.split(roles["sep"])[0]] in ("[SEP]", "</s>"), kind
        assert sv[a.split(roles["pad"])[0]] in ("[PAD]", "<pad>"), kind
        assert sv[a.split(roles["mask"])[0]] in ("[MASK]", "<mask>"), kind
        assert a.split("[unused7]") == [a.student_roles["unk"]]


def test_real_batch_matches_reference(aligners, minilm_tokenizer, data_dir):
    a = aligners["unigram"]
    lines = [l for l in (data_dir / "en" / "wikitext2" / "valid.txt").read_text().splitlines() if l.strip()][:64]
    encs = minilm_tokenizer.encode_batch(lines)
    lt = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), lt), dtype=np.int64)
    mask = np.zeros((len(encs), lt), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    for max_length in (None, 64):
        got = a.align(ids, attention_mask=mask, max_length=max_length)
        want = ref.align(a.table.offsets, a.table.ids, ids, mask.sum(1), max_length, a.pad_id)
        for name, arr in want.items():
            np.testing.assert_array_equal(getattr(got, name), arr, err_msg=name)
        if max_length:
            assert got.student_ids.shape[1] <= max_length
            assert not got.teacher_keep.all()


def test_accepts_every_tokenizer_form(minilm_path, minilm_tokenizer, students, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    students["unigram"].save(str(tmp_path / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(minilm_path))
    assert isinstance(hf, PreTrainedTokenizerFast)
    forms = [
        Aligner.from_tokenizers(minilm_path, tmp_path),
        Aligner.from_tokenizers(str(minilm_path / "tokenizer.json"), str(tmp_path / "tokenizer.json")),
        Aligner.from_tokenizers(hf, students["unigram"]),
    ]
    for a in forms[1:]:
        np.testing.assert_array_equal(a.table.ids, forms[0].table.ids)


def test_loading_disables_padding_and_truncation(minilm_path):
    tok = load_tokenizer(minilm_path)
    assert len(tok.encode("hello world").ids) == 4  # not padded to 128
    assert len(tok.encode("word " * 300).ids) == 302  # not truncated


def test_fingerprint_ignores_padding_but_not_vocabulary(minilm_path, students):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(minilm_path / "tokenizer.json"))  # padding switched on in the file
    assert fingerprint(raw) == fingerprint(minilm_path)
    assert fingerprint(students["wordpiece"]) != fingerprint(minilm_path)


def test_split_accepts_ids_and_strings(aligners):
    a = aligners["wordpiece"]
    tid = a.teacher_tokenizer.token_to_id("##ing")
    assert a.split("##ing") == a.split(tid)
    assert a.split("zzzzunseenword") == a.split("zzzzunseenword")  # a surface not in the teacher vocabulary
    with pytest.raises(ValueError, match=r"teacher id 30522 is outside \[0, 30522\)"):
        a.split(30522)
    with pytest.raises(ValueError, match="teacher id -1"):
        a.split(-1)
    with pytest.raises(TypeError, match="str or an int"):
        a.split(1.5)


def test_align_api(aligners):
    a = aligners["wordpiece"]
    ids = np.array([[101, 7592, 2088, 102, 0]], dtype=np.int32)
    al = a.align(ids, attention_mask=[[1, 1, 1, 1, 0]])
    assert isinstance(al, Alignment)
    b, lt, ls = al.shape
    assert (b, lt) == (1, 5) and al.student_mask.sum() == ls
    assert al.teacher_keep.tolist() == [[True, True, True, True, False]]
    m = al.span_matrix("mean").to_dense()
    assert m.shape == (5, ls)
    np.testing.assert_allclose(m.sum(1).numpy(), [1, 1, 1, 1, 0], rtol=1e-6)
    s = al.span_matrix("sum").to_dense()
    np.testing.assert_array_equal(s.sum(1).numpy(), al.span_end[0] - al.span_start[0])
    t = al.to_torch()
    assert t.student_ids.dtype.is_floating_point is False and str(t.student_ids.dtype) == "torch.int64"
    with pytest.raises(ValueError, match="reduce must be"):
        a.align(ids, reduce="max")
    with pytest.raises(ValueError, match="max_length must be >= 0"):
        a.align(ids, max_length=-2)


def test_torch_inputs_and_buffer_reuse(aligners):
    import torch

    a = aligners["wordpiece"]
    ids = torch.randint(0, a.teacher_vocab_size, (8, 32))
    first = a.align(ids, reuse=True).copy()
    allocs = a.buffer_allocations
    for _ in range(5):
        again = a.align(ids, reuse=True)
    assert a.buffer_allocations == allocs  # steady state: no new buffers
    np.testing.assert_array_equal(again.student_ids, first.student_ids)
    fresh = a.align(ids)
    np.testing.assert_array_equal(fresh.indices, first.indices)


def test_unsupported_and_missing_tokenizers(tmp_path):
    from tokenizers import Tokenizer, models

    with pytest.raises(TokenizerError, match="no tokenizer.json found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="cannot use int"):
        load_tokenizer(3)
    plain_bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    with pytest.raises(TokenizerError, match="marks word starts"):
        detect_scheme(plain_bpe)
