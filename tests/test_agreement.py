"""The teacher-agreement metric: pooling, ranks, Spearman, invariances and the embedding helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from tokenizers import Tokenizer, models, pre_tokenizers

from conftest import bert_template, tiny_bert
from vocabshrink.agreement import (
    agreement,
    embed,
    mean_pool,
    pairwise_cosines,
    rankdata,
    spearman,
    teacher_agreement,
)
from vocabshrink.errors import ConfigError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far",
         "away", "home"]
SENTENCES = ["the cat sat on the mat", "a dog ran", "the dog ran far away home", "cat", "a cat sat",
             "the mat ran away", "dog dog dog dog dog dog dog dog"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(WORDS[:5])
    return bert_template(t, ids={"[CLS]": 2, "[SEP]": 3})


@pytest.fixture(scope="module")
def model():
    return tiny_bert(len(WORDS), 16, seed=0, positions=32).eval()


def test_mean_pool_ignores_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1, 0])
    assert torch.equal(mean_pool(hidden, torch.zeros(2, 3)), torch.zeros(2, 2))  # no NaN for empty rows


def test_ranks_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=200).astype(float)  # many ties
    b = a + rng.normal(size=200)
    np.testing.assert_allclose(rankdata(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(b, -b) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), b[:5]))
    with pytest.raises(ValueError):
        spearman(a, b[:10])


def test_pairwise_cosines():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(pairwise_cosines(x), [0.0, 1 / np.sqrt(2), 1 / np.sqrt(2)])


def test_agreement_is_width_rotation_and_scale_invariant():
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(40, 12))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    wider = np.concatenate([teacher, np.zeros((40, 8))], axis=1) @ q * 7.5  # other width, rotated, scaled
    assert teacher_agreement(teacher, teacher) == pytest.approx(1.0)
    assert teacher_agreement(teacher, wider) == pytest.approx(1.0)
    assert abs(teacher_agreement(teacher, rng.normal(size=(40, 5)))) < 0.2
    noisy = teacher + 0.5 * rng.normal(size=teacher.shape)
    assert 0.3 < teacher_agreement(teacher, noisy) < 0.99
    with pytest.raises(ValueError, match="same"):
        teacher_agreement(teacher, teacher[:10])
    with pytest.raises(ValueError, match="at least 3"):
        teacher_agreement(teacher[:2], teacher[:2])


def test_embed_matches_an_unbatched_forward(model, tok):
    got = embed(model, tok, SENTENCES, batch_size=3, max_length=64)
    assert got.shape == (len(SENTENCES), 16) and got.dtype == np.float32
    for i, sentence in enumerate(SENTENCES):
        ids = torch.tensor([tok.encode(sentence).ids])
        with torch.no_grad():
            want = model.base_model(input_ids=ids).last_hidden_state.mean(1)[0]
        np.testing.assert_allclose(got[i], want.numpy(), rtol=1e-4, atol=1e-5)
    # Padding in larger batches must not change anything.
    np.testing.assert_allclose(embed(model, tok, SENTENCES, batch_size=1), got, rtol=1e-4, atol=1e-5)


def test_embed_truncates_and_leaves_state_alone(model, tok):
    model.train()
    short = embed(model, tok, ["dog " * 40], max_length=4)
    assert model.training  # mode restored
    model.eval()
    ids = torch.tensor([tok.encode("dog dog").ids])  # truncation keeps [CLS] and [SEP]
    assert ids.shape[1] == 4
    with torch.no_grad():
        want = model.base_model(input_ids=ids).last_hidden_state.mean(1)[0]
    np.testing.assert_allclose(short[0], want.numpy(), rtol=1e-4, atol=1e-5)
    assert tok.truncation is None  # the caller's tokenizer is untouched
    assert embed(model, tok, []).shape[0] == 0
    with pytest.raises(ConfigError):
        embed(model, tok, SENTENCES, batch_size=0)


def test_agreement_of_models(model, tok):
    assert agreement(model, tok, model, tok, SENTENCES) == pytest.approx(1.0)
    other = tiny_bert(len(WORDS), 8, 1, seed=5, mlm=False, positions=32).eval()
    value = agreement(model, tok, other, tok, SENTENCES)
    assert -1.0 <= value < 0.999
    t_emb = embed(model, tok, SENTENCES)
    assert agreement(None, None, other, tok, SENTENCES, teacher_embeddings=t_emb) == pytest.approx(value)
