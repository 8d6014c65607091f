"""The teacher prompt (E5's "query: "): align puts it before every document for both tokenizers, distill records
it, the exported student declares it for sentence-transformers, and evaluate embeds with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_distill import lines, make_shards, models  # noqa: F401  (session fixtures)
from vocabshrink.data import ShardDataset
from vocabshrink.errors import ShardError
from vocabshrink.stages import distill as T
from vocabshrink.stages.align import align
from vocabshrink.stages.export import read_prompt
from vocabshrink.tokenization import load_tokenizer

PROMPT = "query: "


@pytest.fixture(scope="module")
def prompted(tmp_path_factory, models, lines):  # noqa: F811
    root = tmp_path_factory.mktemp("prompt")
    out = make_shards(root / "shards", lines[:40], models["bare"], models["student"], prompt=PROMPT)
    return {"corpus": root / "shards.txt", "shards": out, "root": root}


def test_align_puts_the_prompt_before_every_document(prompted, models):  # noqa: F811
    t_tok, s_tok = load_tokenizer(models["bare"]), load_tokenizer(models["student"])
    ds = ShardDataset([prompted["shards"]], models["bare"], models["student"])
    assert ds.settings["prompt"] == PROMPT and len(ds) == 40
    t_prompt = t_tok.encode(PROMPT, add_special_tokens=False).ids
    s_prompt = s_tok.encode(PROMPT, add_special_tokens=False).ids
    for i in (0, 17, 39):
        item = ds[i]
        assert item["teacher_ids"][1:1 + len(t_prompt)].tolist() == t_prompt
        assert item["student_ids"][1:1 + len(s_prompt)].tolist() == s_prompt
        assert t_tok.decode(item["teacher_ids"].tolist()).startswith("query :")


def test_parts_and_reruns_must_agree_on_the_prompt(prompted, models):  # noqa: F811
    plain = prompted["root"] / "plain"
    align([str(prompted["corpus"])], teacher=str(models["bare"]), student=str(models["student"]), out=str(plain),
          max_length=64, progress=False)
    assert "prompt" not in json.loads((plain / "manifest.json").read_text())["settings"]
    with pytest.raises(ShardError, match="prompt"):
        ShardDataset([prompted["shards"], plain], models["bare"], models["student"])
    with pytest.raises(ShardError, match="other settings"):
        align([str(prompted["corpus"])], teacher=str(models["bare"]), student=str(models["student"]),
              out=str(plain), max_length=64, prompt="passage: ", progress=False)


def test_the_student_declares_the_prompt_it_was_trained_with(prompted, models, tmp_path):  # noqa: F811
    report = T.distill(teacher=models["bare"], student=models["student"], data=[prompted["shards"]],
                       out=tmp_path / "run", batch_size=8, max_steps=2, progress=False)
    assert report.settings["prompt"] == PROMPT
    final = tmp_path / "run" / "final"
    config = json.loads((final / "config_sentence_transformers.json").read_text())
    assert config == {"prompts": {"query": PROMPT}, "default_prompt_name": "query"}
    assert read_prompt(final) == PROMPT and read_prompt(models["student"]) == ""
    from vocabshrink.stages.export import export

    export(tmp_path / "run", tmp_path / "exported")
    assert read_prompt(tmp_path / "exported") == PROMPT


def test_evaluate_embeds_with_the_prompt(models):  # noqa: F811
    from vocabshrink.stages import evaluate as E

    m = E._load(models["bare"], "cpu", 64)
    sentences = ["a cat sat on the mat", "the stock market fell"]
    plain = E._embed(m, sentences, 8, "cpu")
    m.prompt = PROMPT
    with_prompt = E._embed(m, sentences, 8, "cpu")
    m.prompt = ""
    by_hand = E._embed(m, [PROMPT + x for x in sentences], 8, "cpu")
    np.testing.assert_allclose(with_prompt, by_hand, atol=1e-6)
    assert not np.allclose(plain, with_prompt, atol=1e-4)
