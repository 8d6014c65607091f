"""init-student: embedding init, width maps, layer choice, output and bad input.

Most tests use tiny teachers built here from configs (random weights, so that
every copied value is distinctive); two use the real MiniLM teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from conftest import bert_template
from vocabshrink.cli import cli
from vocabshrink.errors import ConfigError, CorpusError, ModelError, TokenizerError
from vocabshrink.stages.init_student import evenly_spaced, init_student, parse_layer_map, pca_projection

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = list("abcdefghijklmnopqrstuvwxy")  # no "z": the teacher cannot split "zoo"
TEACHER_VOCAB = SPECIALS + LETTERS + ["##" + c for c in LETTERS] + [
    "hello", "world", "the", "play", "low", "##ing", "##er", "##llo"]
# Student specials in another order: they must be matched by role, not by id.
STUDENT_VOCAB = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "hello", "world", "playing", "lower", "zoo",
                 "##ing", "##s", "s", "t", "##t", "helloworld", "Hello", "Lower"] + [c for c in LETTERS if c not in "st"]
COPIED = ["hello", "world", "##ing", "##s", "s", "t", "##t"] + [c for c in LETTERS if c not in "st"]
# "Hello" and "Lower" split only after the teacher's lowercasing normalizer.
SUBWORD = ["playing", "lower", "helloworld", "Hello", "Lower"]
FALLBACK = ["zoo"]
assert len(set(TEACHER_VOCAB)) == len(TEACHER_VOCAB) and len(set(STUDENT_VOCAB)) == len(STUDENT_VOCAB)
SIZE = dict(hidden=32, layers=4, heads=4, intermediate=64, positions=40)


def make_tokenizer(vocab: list[str], post_ids: dict[str, int] | None = None) -> Tokenizer:
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([t for t in SPECIALS if t in vocab])
    ids = post_ids or {t: vocab.index(t) for t in ("[CLS]", "[SEP]")}
    return bert_template(tok, ids=ids)


def save_tokenizer(tok: Tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Distinctive values everywhere (fresh LayerNorms are all ones and zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def make_teacher(folder: Path, kind: str, tok: Tokenizer | None = None, seed: int = 0) -> Path:
    import transformers as tf

    v, h, n, a, i, pos = len(TEACHER_VOCAB), SIZE["hidden"], SIZE["layers"], SIZE["heads"], SIZE["intermediate"], \
        SIZE["positions"]
    if kind in ("BertModel", "BertForMaskedLM"):
        cfg = tf.BertConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                            intermediate_size=i, max_position_embeddings=pos)
    elif kind == "DistilBertForMaskedLM":
        cfg = tf.DistilBertConfig(vocab_size=v, dim=h, n_layers=n, n_heads=a, hidden_dim=i,
                                  max_position_embeddings=pos)
    elif kind == "RobertaForMaskedLM":
        cfg = tf.RobertaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                               intermediate_size=i, max_position_embeddings=pos + 1, pad_token_id=0,
                               bos_token_id=2, eos_token_id=3, type_vocab_size=1)
    elif kind == "GPT2Model":
        cfg = tf.GPT2Config(vocab_size=v, n_embd=16, n_layer=1, n_head=2, n_positions=pos)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = getattr(tf, kind)(cfg)
    randomize(model, seed)
    model.save_pretrained(str(folder))
    save_tokenizer(tok or make_tokenizer(TEACHER_VOCAB), folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    teachers = {k: make_teacher(root / k, k) for k in
                ("BertModel", "BertForMaskedLM", "DistilBertForMaskedLM", "RobertaForMaskedLM")}
    return {
        "root": root,
        "teachers": teachers,
        "student_tok": save_tokenizer(make_tokenizer(STUDENT_VOCAB), root / "student-tok"),
        "teacher_tok": save_tokenizer(make_tokenizer(TEACHER_VOCAB), root / "teacher-tok"),
    }


def load(teacher: Path):
    from transformers import AutoModel, AutoModelForMaskedLM

    cfg = json.loads((teacher / "config.json").read_text())
    loader = AutoModelForMaskedLM if cfg["architectures"][0].endswith("ForMaskedLM") else AutoModel
    return loader.from_pretrained(str(teacher)).eval()


def student_sd(out: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForMaskedLM

    return {k: v.detach() for k, v in AutoModelForMaskedLM.from_pretrained(str(out)).state_dict().items()}


def sid(token: str) -> int:
    return STUDENT_VOCAB.index(token)


def tid(token: str) -> int:
    return TEACHER_VOCAB.index(token)


# ------------------------------------------------------------------------------------------ embeddings


def test_fvt_rows_at_equal_width(tiny, tmp_path):
    teacher = tiny["teachers"]["BertForMaskedLM"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=2,
                          embedding_init="fvt")
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    t_word, s_word = tsd["bert.embeddings.word_embeddings.weight"], sd["bert.embeddings.word_embeddings.weight"]
    t_bias, s_bias = tsd["cls.predictions.bias"], sd["cls.predictions.bias"]
    for token in COPIED:
        assert torch.equal(s_word[sid(token)], t_word[tid(token)]), token
        assert torch.equal(s_bias[sid(token)], t_bias[tid(token)]), token
    # The mean over the teacher tokenizer's own WordPiece split, computed independently of the C++ splitter.
    teacher_tok = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    for word in SUBWORD:
        pieces = teacher_tok.encode(word, add_special_tokens=False).ids
        assert len(pieces) > 1 or word == "Hello"
        torch.testing.assert_close(s_word[sid(word)], t_word[pieces].mean(0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(s_bias[sid(word)], t_bias[pieces].mean(0), rtol=1e-6, atol=1e-6)
    for token in SPECIALS:  # by role, though the ids differ
        assert torch.equal(s_word[sid(token)], t_word[tid(token)]), token
    base = [tid(t) for t in TEACHER_VOCAB if t not in SPECIALS]
    mean = t_word[base].mean(0)
    zoo = s_word[sid("zoo")]
    assert not torch.equal(zoo, mean)  # noise was added...
    assert torch.all((zoo - mean).abs() <= 0.6 * t_word[base].std(0) + 1e-6)  # ...and is small (0.1 std, 6 sigma)
    torch.testing.assert_close(s_bias[sid("zoo")], t_bias[base].mean(), rtol=1e-6, atol=1e-6)
    assert report.coverage == {"copied": len(COPIED), "subword_mean": len(SUBWORD), "special": len(SPECIALS),
                               "fallback": len(FALLBACK)}
    assert report.mlm_head == "teacher"
    # The tied decoder is the embedding matrix.
    assert torch.equal(sd["cls.predictions.decoder.weight"], s_word)


def test_fvt_is_seeded(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    rows = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / name, layers=1, seed=seed,
                     embedding_init="fvt")
        rows.append(student_sd(tmp_path / name)["bert.embeddings.word_embeddings.weight"][sid("zoo")])
    assert torch.equal(rows[0], rows[1])
    assert not torch.equal(rows[0], rows[2])


def test_random_embeddings(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=1,
                          embedding_init="random")
    s_word = student_sd(tmp_path / "s")["bert.embeddings.word_embeddings.weight"]
    t_word = load(teacher).state_dict()["embeddings.word_embeddings.weight"]
    assert report.coverage == {"random": len(STUDENT_VOCAB)}
    assert not torch.allclose(s_word[sid("hello")], t_word[tid("hello")])
    assert report.mlm_head == "random"


def _context(teacher: Path, tokens: list[str]) -> torch.Tensor:
    """Model2Vec's vector of each token, computed here with the teacher's own tokenizer and model."""
    model = load(teacher)
    base = getattr(model, "base_model", model)
    teacher_tok = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    rows = []
    with torch.no_grad():
        for token in tokens:
            ids = teacher_tok.encode(token.removeprefix("##") if token.startswith("##") else token).ids
            if token.startswith("##"):  # a continuation piece: the teacher's own ##piece between [CLS] and [SEP]
                ids = [tid("[CLS]"), tid(token), tid("[SEP]")]
            rows.append(base(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0))
    return torch.stack(rows)


def test_contextual_vectors_are_model2vecs(tiny, tmp_path):
    from vocabshrink.stages.init_student import build_token_map, contextual_vectors

    teacher = tiny["teachers"]["BertForMaskedLM"]
    s_tok = Tokenizer.from_file(str(tiny["student_tok"] / "tokenizer.json"))
    t_tok = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    tokens = ["hello", "playing", "helloworld", "##ing", "lower"]
    got = contextual_vectors(load(teacher), t_tok, build_token_map(s_tok, t_tok), np.array([sid(t) for t in tokens]))
    torch.testing.assert_close(got, _context(teacher, tokens), rtol=1e-5, atol=1e-5)


def test_contextual_start(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "f", layers=1, embedding_init="fvt")
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "c", layers=1,
                          embedding_init="contextual")
    fvt = student_sd(tmp_path / "f")["bert.embeddings.word_embeddings.weight"]
    got = student_sd(tmp_path / "c")["bert.embeddings.word_embeddings.weight"]
    for token in SPECIALS + FALLBACK:  # no contextual meaning: fvt's rows
        assert torch.equal(got[sid(token)], fvt[sid(token)]), token
    moved = [sid(t) for t in COPIED + SUBWORD]
    ctx = _context(teacher, COPIED + SUBWORD).double()
    ctx -= ctx.mean(0)
    rows, ref = got[moved].double(), fvt[moved].double()
    torch.testing.assert_close(rows.mean(0), ref.mean(0), rtol=1e-4, atol=1e-4)
    centred = rows - rows.mean(0)
    scale = (centred.norm(dim=1) / ctx.norm(dim=1)).mean()
    torch.testing.assert_close(centred, ctx * scale, rtol=1e-3, atol=1e-3)  # one positive scale for all rows
    torch.testing.assert_close(centred.norm(dim=1).mean(), (ref - ref.mean(0)).norm(dim=1).mean())
    assert report.embedding_init == "contextual" and any("contextual start" in n for n in report.notes)


def test_auto_start_is_fvt_at_the_teachers_shape_and_contextual_below(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    full = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "a", layers=SIZE["layers"])
    small = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "b", layers=1)
    narrow = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "c", hidden=16,
                          layers=SIZE["layers"])
    assert (full.embedding_init, small.embedding_init, narrow.embedding_init) == ("fvt", "contextual", "contextual")
    contextual = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "d", layers=1,
                              embedding_init="contextual")
    torch.testing.assert_close(student_sd(tmp_path / "b"), student_sd(tmp_path / "d"), rtol=0, atol=0)
    assert contextual.embedding_init == "contextual"


def test_contextual_fit_start(tiny, tmp_path, monkeypatch):
    import vocabshrink.stages.init_student as init_mod

    teacher = tiny["teachers"]["BertModel"]
    kept = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "k", layers=1,
                        embedding_init="contextual-fit")
    assert any("fvt rows are kept" in n for n in kept.notes)  # 30 copied tokens cannot fit a 33-input map
    fvt = student_sd(tmp_path / "k")["bert.embeddings.word_embeddings.weight"]
    monkeypatch.setattr(init_mod, "FIT_TOKENS_PER_DIM", 0)
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=1,
                          embedding_init="contextual-fit")
    got = student_sd(tmp_path / "s")["bert.embeddings.word_embeddings.weight"]
    for token in COPIED + SPECIALS + FALLBACK:  # the teacher's own rows stay
        assert torch.equal(got[sid(token)], fvt[sid(token)]), token
    # The subword rows: the ridge map fitted on the copied tokens, solved here with numpy.
    x = np.hstack([_context(teacher, COPIED).double().numpy(), np.ones((len(COPIED), 1))])
    y = fvt[[sid(t) for t in COPIED]].double().numpy()
    normal = x.T @ x
    a = np.linalg.solve(normal + np.eye(len(normal)) * init_mod.CONTEXT_RIDGE * normal.diagonal().mean(), x.T @ y)
    xs = np.hstack([_context(teacher, SUBWORD).double().numpy(), np.ones((len(SUBWORD), 1))])
    np.testing.assert_allclose(got[[sid(t) for t in SUBWORD]].numpy(), xs @ a, rtol=1e-3, atol=1e-3)
    assert any("fitted on 30 copied tokens" in n for n in report.notes)


# ------------------------------------------------------------------------------------------ width


def test_pca_keeps_the_most_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 24)) @ rng.normal(size=(24, 24)) + 3.0
    k = 7
    p, explained = pca_projection(x, k)
    np.testing.assert_allclose(p.T @ p, np.eye(k), atol=1e-10)
    xc = x - x.mean(0)
    s = np.linalg.svd(xc, compute_uv=False)  # independent: singular values of the centred matrix
    best = (s[:k] ** 2).sum()
    kept = ((xc @ p) ** 2).sum()
    np.testing.assert_allclose(kept, best, rtol=1e-9)
    np.testing.assert_allclose(explained, best / (s ** 2).sum(), rtol=1e-9)
    for _ in range(20):  # any other rank-k orthonormal projection keeps less
        q, _ = np.linalg.qr(rng.normal(size=(24, k)))
        assert ((xc @ q) ** 2).sum() <= kept + 1e-9
    assert ((xc[:, :k]) ** 2).sum() <= kept  # truncation too
    with pytest.raises(ConfigError):
        pca_projection(x, 25)


def test_pca_projection_applied_consistently(tiny, tmp_path):
    teacher = tiny["teachers"]["BertForMaskedLM"]
    report = init_student(teacher=teacher, tokenizer=tiny["teacher_tok"], out=tmp_path / "s", hidden=16,
                          layer_map="1,3", embedding_init="fvt")
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    w = tsd["bert.embeddings.word_embeddings.weight"]
    p = torch.from_numpy(pca_projection(w.numpy(), 16)[0]).float()
    assert report.student_shape == {"layers": 2, "hidden": 16, "heads": 2, "intermediate": 32,
                                    "vocab": len(TEACHER_VOCAB)}  # heads keep the teacher's size 8
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sd["bert.embeddings.word_embeddings.weight"], w @ p, **close)
    torch.testing.assert_close(sd["bert.embeddings.position_embeddings.weight"],
                               tsd["bert.embeddings.position_embeddings.weight"] @ p, **close)
    g = tsd["bert.embeddings.LayerNorm.weight"]
    torch.testing.assert_close(sd["bert.embeddings.LayerNorm.weight"], torch.diagonal(p.T @ torch.diag(g) @ p), **close)
    t, s = "bert.encoder.layer.3.", "bert.encoder.layer.1."
    rows = torch.arange(16)  # heads 0 and 1, whole (8 dims each)
    torch.testing.assert_close(sd[s + "attention.self.query.weight"], tsd[t + "attention.self.query.weight"][rows] @ p,
                               **close)
    torch.testing.assert_close(sd[s + "attention.self.value.bias"], tsd[t + "attention.self.value.bias"][rows], **close)
    torch.testing.assert_close(sd[s + "attention.output.dense.weight"],
                               p.T @ tsd[t + "attention.output.dense.weight"][:, rows], **close)
    torch.testing.assert_close(sd[s + "output.dense.bias"], tsd[t + "output.dense.bias"] @ p, **close)
    torch.testing.assert_close(sd[s + "intermediate.dense.weight"],
                               tsd[t + "intermediate.dense.weight"][:32] @ p, **close)
    torch.testing.assert_close(sd["cls.predictions.transform.dense.weight"],
                               p.T @ tsd["cls.predictions.transform.dense.weight"] @ p, **close)
    assert 0 < report.explained_variance < 1


def test_truncate_equals_slicing(tiny, tmp_path):
    teacher = tiny["teachers"]["BertForMaskedLM"]
    init_student(teacher=teacher, tokenizer=tiny["teacher_tok"], out=tmp_path / "s", hidden=16, heads=4,
                 intermediate=24, reduce="truncate", layer_map="2", embedding_init="fvt")
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    checked = 0
    for key, value in sd.items():
        src = key.replace("layer.0.", "layer.2.")
        sliced = tsd[src][tuple(slice(0, n) for n in value.shape)]
        assert torch.equal(value, sliced), key
        checked += 1
    assert checked >= 20


# ------------------------------------------------------------------------------------------ layers


def test_layer_choice():
    assert evenly_spaced(6, 12) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(3, 6) == [0, 2, 5]
    assert evenly_spaced(1, 6) == [0]
    assert parse_layer_map("0, 2,4", 6) == [[0], [2], [4]]
    assert parse_layer_map("0+1,2+3", 6) == [[0, 1], [2, 3]]
    assert parse_layer_map([1, [2, 3]], 6) == [[1], [2, 3]]
    for bad in ("0,6", "a,b", "0,,1", "-1"):
        with pytest.raises(ConfigError):
            parse_layer_map(bad, 6)


@pytest.mark.parametrize("kind", ["BertModel", "BertForMaskedLM", "DistilBertForMaskedLM", "RobertaForMaskedLM"])
def test_all_layers_at_equal_width_reproduce_the_teacher(tiny, tmp_path, kind):
    """With the teacher's own tokenizer and every layer selected, the student computes what the teacher does."""
    from transformers import AutoModelForMaskedLM

    teacher = tiny["teachers"][kind]
    report = init_student(teacher=teacher, tokenizer=teacher, out=tmp_path / "s", layers=SIZE["layers"])
    assert report.layer_map == [[0], [1], [2], [3]]
    assert report.coverage["fallback"] == 0 and report.coverage["subword_mean"] == 0
    t_model = load(teacher)
    s_model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "s")).eval()
    tok = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    ids = torch.tensor([tok.encode("hello world playing lower the").ids])
    with torch.no_grad():
        t_hidden = t_model.base_model(input_ids=ids).last_hidden_state
        s_hidden = s_model.base_model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(s_hidden, t_hidden, rtol=1e-4, atol=1e-4)
        if kind != "BertModel":
            torch.testing.assert_close(s_model(input_ids=ids).logits, t_model(input_ids=ids).logits,
                                       rtol=1e-4, atol=1e-4)


def test_selected_layers_equal_the_teachers(tiny, tmp_path):
    teacher = tiny["teachers"]["DistilBertForMaskedLM"]
    init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s")  # default: half, spaced
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    for s_layer, t_layer in enumerate(evenly_spaced(2, 4)):
        for s_name, t_name in (("attention.self.query", "attention.q_lin"), ("attention.output.dense", "attention.out_lin"),
                               ("intermediate.dense", "ffn.lin1"), ("output.LayerNorm", "output_layer_norm")):
            for part in ("weight", "bias"):
                assert torch.equal(sd[f"bert.encoder.layer.{s_layer}.{s_name}.{part}"],
                                   tsd[f"distilbert.transformer.layer.{t_layer}.{t_name}.{part}"])
    assert "bert.encoder.layer.2.attention.self.query.weight" not in sd


def test_average_layers(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=2,
                          layer_init="average")
    assert report.layer_map == [[0, 1], [2, 3]]
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    for s_layer, group in enumerate(report.layer_map):
        key = "attention.self.key.weight"
        mean = torch.stack([tsd[f"encoder.layer.{g}.{key}"] for g in group]).mean(0)
        torch.testing.assert_close(sd[f"bert.encoder.layer.{s_layer}.{key}"], mean, rtol=1e-6, atol=1e-6)


def test_random_layers_are_not_the_teachers(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=1,
                          layer_init="random", heads=8)
    assert report.layer_map is None
    sd = student_sd(tmp_path / "s")
    tsd = load(teacher).state_dict()
    q = sd["bert.encoder.layer.0.attention.self.query.weight"]
    assert all(not torch.allclose(q, tsd[f"encoder.layer.{i}.attention.self.query.weight"]) for i in range(4))
    assert q.std() < 0.05  # the student's own init (std 0.02), not a teacher layer (std 0.5)


# ------------------------------------------------------------------------------------------ output


def test_output_loads_and_runs(tiny, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    teacher = tiny["teachers"]["RobertaForMaskedLM"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", hidden=16)
    out = tmp_path / "s"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "init_report.json"} <= {f.name for f in out.iterdir()}
    assert not list(tmp_path.glob(".s.tmp-*"))
    model = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "BertForMaskedLM"
    assert tok.mask_token == "[MASK]" and tok.pad_token_id == sid("[PAD]")
    assert model.config.pad_token_id == sid("[PAD]") and model.config.vocab_size == len(STUDENT_VOCAB)
    batch = tok(["hello world", "playing zoo lower"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == sid("[CLS]")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(STUDENT_VOCAB))
    assert torch.isfinite(logits).all()
    saved = json.loads((out / "init_report.json").read_text())
    assert saved == json.loads(report.to_json())
    # RoBERTa numbers positions from pad + 1: the student's position 0 is the teacher's row 1.
    tsd = load(teacher).state_dict()
    p = torch.from_numpy(pca_projection(tsd["roberta.embeddings.word_embeddings.weight"].numpy(), 16)[0]).float()
    torch.testing.assert_close(model.state_dict()["bert.embeddings.position_embeddings.weight"],
                               tsd["roberta.embeddings.position_embeddings.weight"][1:] @ p, rtol=1e-5, atol=1e-5)


def test_parameter_counts(tiny, tmp_path):
    teacher = tiny["teachers"]["BertForMaskedLM"]
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=3, hidden=24,
                          heads=3, intermediate=40)
    v, d, i, n, pos, types = len(STUDENT_VOCAB), 24, 40, 3, SIZE["positions"], 2
    per_layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 2 * 2 * d
    head = d * d + d + 2 * d + v  # transform, its LayerNorm, output bias (decoder tied)
    expected = v * d + pos * d + types * d + 2 * d + n * per_layer + head
    assert report.student_parameters == expected
    assert report.student_embedding_parameters == (v + pos + types) * d
    t = load(teacher)
    assert report.teacher_parameters == sum(p.numel() for p in t.parameters())
    assert report.teacher_embedding_parameters == (len(TEACHER_VOCAB) + pos + types) * SIZE["hidden"]
    assert report.compression == pytest.approx(report.teacher_parameters / expected, rel=1e-3)
    assert report.student_bytes == (tmp_path / "s" / "model.safetensors").stat().st_size
    assert report.student_bytes < report.teacher_bytes


def test_agreement_with_eval_corpus(tiny, tmp_path):
    corpus = tmp_path / "held-out.txt"
    corpus.write_text("hello world\n\nthe world is low\nplaying the hello\nlower world playing\nthe the\n")
    teacher = tiny["teachers"]["BertModel"]
    full = init_student(teacher=teacher, tokenizer=teacher, out=tmp_path / "a", layers=4, eval_corpus=corpus)
    assert full.eval_sentences == 5
    assert full.agreement == pytest.approx(1.0, abs=1e-6)  # the student is the teacher
    part = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "b", layers=1,
                        eval_corpus=[corpus], eval_sentences=4)
    assert part.eval_sentences == 4 and -1 <= part.agreement < 1


def test_rerun_replaces_a_previous_output(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=1)
    report = init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", layers=2)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["num_hidden_layers"] == 2
    assert report.student_shape["layers"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_cli(tiny, tmp_path):
    runner = CliRunner()
    teacher = tiny["teachers"]["BertForMaskedLM"]
    result = runner.invoke(cli, ["init-student", "--teacher", str(teacher), "--tokenizer", str(tiny["student_tok"]),
                                 "--out", str(tmp_path / "s"), "--hidden", "16", "--layer-map", "0+1,3"])
    assert result.exit_code == 0, result.output
    assert "compression" in result.output and "copied" in result.output
    report = json.loads((tmp_path / "s" / "init_report.json").read_text())
    assert report["layer_map"] == [[0, 1], [3]] and report["student_shape"]["hidden"] == 16
    bad = runner.invoke(cli, ["init-student", "--teacher", str(teacher), "--tokenizer", str(tiny["student_tok"]),
                              "--out", str(tmp_path / "t"), "--hidden", "30", "--heads", "4"])
    assert bad.exit_code == 1
    assert "does not divide" in bad.output and "Traceback" not in bad.output
    assert "Example" in runner.invoke(cli, ["init-student", "--help"]).output


def test_dropout(tiny, tmp_path):
    """--dropout sets the student's hidden and attention dropout; without it the student keeps the teacher's."""
    teacher = tiny["teachers"]["BertForMaskedLM"]
    kept = json.loads((teacher / "config.json").read_text())
    init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "a", hidden=16)
    runner = CliRunner()
    result = runner.invoke(cli, ["init-student", "--teacher", str(teacher), "--tokenizer", str(tiny["student_tok"]),
                                 "--out", str(tmp_path / "b"), "--hidden", "16", "--dropout", "0"])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((tmp_path / n / "config.json").read_text()) for n in "ab")
    assert a["hidden_dropout_prob"] == kept["hidden_dropout_prob"] > 0
    assert a["attention_probs_dropout_prob"] == kept["attention_probs_dropout_prob"] > 0
    assert b["hidden_dropout_prob"] == b["attention_probs_dropout_prob"] == 0.0
    wa, wb = (load_file(str(tmp_path / n / "model.safetensors")) for n in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # the weights do not change
    bad = runner.invoke(cli, ["init-student", "--teacher", str(teacher), "--tokenizer", str(tiny["student_tok"]),
                              "--out", str(tmp_path / "c"), "--dropout", "1.5"])
    assert bad.exit_code == 1 and "Invalid value for '--dropout'" in bad.output and not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------------ bad input


def test_unsupported_teacher(tiny):
    gpt = make_teacher(tiny["root"] / "gpt2", "GPT2Model")
    with pytest.raises(ModelError, match="GPT2Model"):
        init_student(teacher=gpt, tokenizer=tiny["student_tok"], out=tiny["root"] / "never")
    assert not (tiny["root"] / "never").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=30, heads=4), "does not divide"),
    (dict(hidden=64), "wider than the teacher"),
    (dict(hidden=32, heads=8), "cannot be taken from the teacher"),
    (dict(intermediate=128), "exceeds the teacher"),
    (dict(layers=5), "exceeds the teacher's 4 layers"),
    (dict(layers=2, layer_map="0,1,2"), "--layer-map names 3"),
    (dict(layer_map="9"), "layer 9 does not exist"),
    (dict(layers=0), "at least 1"),
    (dict(reduce="svd"), "--reduce must be one of"),
    (dict(embedding_init="copy"), "--embedding-init must be one of"),
    (dict(dropout=1.0), "--dropout must be in"),
    (dict(dropout=-0.1), "--dropout must be in"),
])
def test_bad_options(tiny, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        init_student(teacher=tiny["teachers"]["BertModel"], tokenizer=tiny["student_tok"], out=tmp_path / "s",
                     **kwargs)
    assert not (tmp_path / "s").exists()


def test_special_token_mismatch(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    no_mask = [t for t in STUDENT_VOCAB if t != "[MASK]"]
    folder = save_tokenizer(make_tokenizer(no_mask), tmp_path / "no-mask")
    with pytest.raises(TokenizerError, match="no mask token"):
        init_student(teacher=teacher, tokenizer=folder, out=tmp_path / "s")
    # A template that adds [CLS]/[SEP] under the teacher's ids, not the student's.
    wrong = make_tokenizer(STUDENT_VOCAB, post_ids={"[CLS]": tid("[CLS]"), "[SEP]": tid("[SEP]")})
    folder = save_tokenizer(wrong, tmp_path / "wrong-ids")
    with pytest.raises(TokenizerError, match=r"adds '\[CLS\]' as id 2"):
        init_student(teacher=teacher, tokenizer=folder, out=tmp_path / "s")
    # A teacher whose tokenizer is larger than its embedding matrix.
    big = make_teacher(tmp_path / "big", "BertModel", tok=make_tokenizer(TEACHER_VOCAB + ["extra", "more"]))
    with pytest.raises(ModelError, match="does not belong"):
        init_student(teacher=big, tokenizer=tiny["student_tok"], out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_missing_files(tiny, tmp_path):
    import shutil

    src = tiny["teachers"]["BertModel"]
    cases = {}
    for drop in ("config.json", "model.safetensors", "tokenizer.json"):
        folder = tmp_path / f"no-{drop}"
        shutil.copytree(src, folder)
        (folder / drop).unlink()
        cases[drop] = folder
    with pytest.raises(ModelError, match="config.json is missing"):
        init_student(teacher=cases["config.json"], tokenizer=tiny["student_tok"], out=tmp_path / "s")
    with pytest.raises(ModelError, match="no model weights"):
        init_student(teacher=cases["model.safetensors"], tokenizer=tiny["student_tok"], out=tmp_path / "s")
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        init_student(teacher=cases["tokenizer.json"], tokenizer=tiny["student_tok"], out=tmp_path / "s")
    with pytest.raises(ModelError, match="no such model directory"):
        init_student(teacher=tmp_path / "nowhere", tokenizer=tiny["student_tok"], out=tmp_path / "s")
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        init_student(teacher=src, tokenizer=tmp_path / "nowhere", out=tmp_path / "s")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        init_student(teacher=src, tokenizer=tmp_path / "corrupt", out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_bad_eval_corpus_and_out(tiny, tmp_path):
    teacher = tiny["teachers"]["BertModel"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="at least 3 non-empty lines"):
        init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", eval_corpus=empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(CorpusError, match="line 2"):
        init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=tmp_path / "s", eval_corpus=bad)
    assert not (tmp_path / "s").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]  # no temporary folder left behind
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an init-student output"):
        init_student(teacher=teacher, tokenizer=tiny["student_tok"], out=other)
    assert (other / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------ real teacher


@pytest.fixture(scope="module")
def minilm_student_tok(data_dir, minilm_tokenizer, tmp_path_factory):
    from conftest import train_student

    tok = train_student("wordpiece", [str(data_dir / "en" / "wikitext2" / "valid.txt")], 3000, minilm_tokenizer)
    folder = tmp_path_factory.mktemp("minilm-student")
    save_tokenizer(tok, folder / "ok")
    tok.post_processor = minilm_tokenizer.post_processor  # the teacher's template: [CLS] = 101, [SEP] = 102
    save_tokenizer(tok, folder / "broken")
    return folder / "ok", folder / "broken"


@pytest.mark.slow
def test_minilm_teacher(minilm_path, minilm_student_tok, data_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    good, broken = minilm_student_tok
    with pytest.raises(TokenizerError, match="id 101"):
        init_student(teacher=minilm_path, tokenizer=broken, out=tmp_path / "x")
    report = init_student(teacher=minilm_path, tokenizer=good, out=tmp_path / "s", embedding_init="fvt",
                          eval_corpus=data_dir / "en" / "wikitext2" / "test.txt", eval_sentences=24)
    assert report.student_shape == {"layers": 3, "hidden": 384, "heads": 12, "intermediate": 1536, "vocab": 3000}
    assert report.layer_map == [[0], [2], [5]]
    assert report.teacher_parameters == 22_713_216 and report.mlm_head == "random"
    cov = report.coverage
    assert sum(cov.values()) == 3000 and cov["special"] == 5 and cov["copied"] > 1500
    assert 0.1 < report.agreement <= 1.0
    sd = student_sd(tmp_path / "s")
    from transformers import AutoModel

    t_word = AutoModel.from_pretrained(str(minilm_path)).state_dict()["embeddings.word_embeddings.weight"]
    s_tok = Tokenizer.from_file(str(good / "tokenizer.json"))
    t_tok = Tokenizer.from_file(str(minilm_path / "tokenizer.json"))
    s_word = sd["bert.embeddings.word_embeddings.weight"]
    for token in ("the", "world", "##ing"):
        assert torch.equal(s_word[s_tok.token_to_id(token)], t_word[t_tok.token_to_id(token)]), token
    # A student word the teacher splits: the mean of the teacher's own WordPiece split.
    multi = next(t for t in s_tok.get_vocab() if t.isalpha() and t_tok.token_to_id(t) is None and len(t) > 4)
    t_tok.no_padding()
    pieces = t_tok.encode(multi, add_special_tokens=False).ids
    torch.testing.assert_close(s_word[s_tok.token_to_id(multi)], t_word[pieces].mean(0), rtol=1e-5, atol=1e-6)
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "s"))
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "s"))
    batch = hf_tok(["The cat sat on the [MASK] ."], return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape[-1] == 3000
