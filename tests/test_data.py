"""The reader: integrity checks, the length-grouped sampler, collate and MLM masking."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import train_student

from vocabshrink.aligner import Aligner, ChunkAlignment, TorchAlignment
from vocabshrink.data import Collator, LengthGroupedSampler, ShardDataset
from vocabshrink.errors import ConfigError, ShardError
from vocabshrink.losses import chunk_mean, span_mean
from vocabshrink.stages.align import MANIFEST, align


@pytest.fixture(scope="session")
def data_env(tmp_path_factory, data_dir, minilm_path, minilm_tokenizer):

    root = tmp_path_factory.mktemp("data")
    valid = data_dir / "en" / "wikitext2" / "valid.txt"
    small = root / "small.txt"
    small.write_text("".join(valid.read_text(encoding="utf-8").splitlines(keepends=True)[:300]), encoding="utf-8")
    student = train_student("wordpiece", [str(small)], 1500, minilm_tokenizer)
    student_path = root / "student.json"
    student.save(str(student_path))
    out = root / "shards"
    align(str(small), teacher=minilm_path, student=student_path, out=out, max_length=96, examples_per_shard=60,
          progress=False)
    return SimpleNamespace(root=root, out=out, teacher=minilm_path, student=student_path, small=small)


@pytest.fixture(scope="session")
def dataset(data_env):
    return ShardDataset(data_env.out, data_env.teacher, data_env.student)


def damaged_copy(data_env, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(data_env.out, copy)
    return copy


def test_rejects_other_tokenizers(data_env, tmp_path, minilm_tokenizer):
    other = train_student("bytelevel", [str(data_env.small)], 400)
    with pytest.raises(ShardError, match=r"manifest.json: made with another student tokenizer"):
        ShardDataset(data_env.out, data_env.teacher, other)
    with pytest.raises(ShardError, match=r"made with another teacher tokenizer"):
        ShardDataset(data_env.out, data_env.student, data_env.student)


def test_rejects_a_flipped_byte(data_env, tmp_path):
    copy = damaged_copy(data_env, tmp_path)
    shard = copy / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00001.safetensors: sha256 differs"):
        ShardDataset(copy, data_env.teacher, data_env.student)


def test_rejects_a_truncated_shard(data_env, tmp_path):
    copy = damaged_copy(data_env, tmp_path)
    shard = copy / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ShardError, match=r"shard-00000.safetensors: \d+ bytes, the manifest says"):
        ShardDataset(copy, data_env.teacher, data_env.student, verify="size")


def test_rejects_a_structurally_wrong_shard_even_with_a_matching_hash(data_env, tmp_path):
    from safetensors.numpy import load_file, save

    from vocabshrink.stages.align import sha256_file

    copy = damaged_copy(data_env, tmp_path)
    shard = copy / "shard-00000.safetensors"
    arrays = load_file(str(shard))
    arrays["student_offsets"] = arrays["student_offsets"].copy()
    arrays["student_offsets"][3] = arrays["student_offsets"][5]  # offsets that go backwards
    shard.write_bytes(save(arrays))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["shards"][0].update(sha256=sha256_file(shard), bytes=shard.stat().st_size)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"shard-00000.safetensors: student_offsets are not increasing"):
        ShardDataset(copy, data_env.teacher, data_env.student)


def test_rejects_missing_or_unfinished_manifests(data_env, tmp_path):
    copy = damaged_copy(data_env, tmp_path)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["complete"] = False
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="did not finish"):
        ShardDataset(copy, data_env.teacher, data_env.student)
    (copy / MANIFEST).unlink()
    with pytest.raises(ShardError, match=r"manifest.json: missing"):
        ShardDataset(copy, data_env.teacher, data_env.student)
    with pytest.raises(ShardError, match="no such shard folder"):
        ShardDataset(tmp_path / "nowhere", data_env.teacher, data_env.student)


def test_dataset_pickles_without_its_memory_maps(dataset):
    dataset[0]
    blob = pickle.dumps(dataset)
    assert len(blob) < 200_000  # memory maps would copy every shard into the pickle
    again = pickle.loads(blob)
    assert [again[5][k].tolist() for k in ("teacher_ids", "student_ids")] == \
           [dataset[5][k].tolist() for k in ("teacher_ids", "student_ids")]


def test_collate_follows_the_batch_contract(dataset, data_env):
    collator = Collator.from_dataset(dataset, seed=1)
    items = [dataset[i] for i in (3, 0, 7, 11)]
    batch = collator(items)
    for key in ("teacher_input_ids", "teacher_attention_mask", "student_input_ids", "student_attention_mask",
                "mlm_labels", "student_original_ids"):
        assert batch[key].dtype == torch.int64, key
    t, tm = batch["teacher_input_ids"], batch["teacher_attention_mask"]
    for row, item in enumerate(items):
        n = len(item["teacher_ids"])
        assert t[row, :n].tolist() == item["teacher_ids"].tolist() and tm[row].sum() == n
        assert (t[row, n:] == 0).all()  # the teacher's [PAD]
        m = len(item["student_ids"])
        assert batch["student_original_ids"][row, :m].tolist() == item["student_ids"].tolist()
    labels = batch["mlm_labels"]
    masked = labels != -100
    assert masked.any()
    assert (labels[masked] == batch["student_original_ids"][masked]).all()
    assert (batch["student_input_ids"][~masked] == batch["student_original_ids"][~masked]).all()
    # the split side equals the Aligner's expansion of the same teacher ids
    split = batch["split"]
    assert isinstance(split, TorchAlignment)
    aligner = Aligner.from_tokenizers(data_env.teacher, data_env.student)
    expected = aligner.align(t, tm, max_length=dataset.max_length)
    assert split.student_ids.tolist() == expected.student_ids.tolist()
    assert split.span_end.tolist() == expected.span_end.tolist()
    hidden = torch.randn(split.student_ids.shape[0], split.student_ids.shape[1], 4)
    assert span_mean(hidden, split).shape == (4, t.shape[1], 4)
    chunks = batch["chunks"]
    assert isinstance(chunks, ChunkAlignment) and chunks.chunk_mask.dtype == torch.bool
    own = torch.randn(*batch["student_input_ids"].shape, 4)
    assert chunk_mean(own, chunks, "student").shape == (4, chunks.chunk_mask.shape[1], 4)
    # [CLS] is its own chunk on both sides; row 0's chunk pooling covers every real token once
    assert chunks.chunk_mask[:, 0].all()
    n0 = len(items[0]["student_ids"])
    assert sorted(chunks.student_indices[chunks.student_indptr[0]:chunks.student_indptr[int(chunks.chunk_mask[0].sum())]]
                  .tolist()) == list(range(n0))
    # same seed, same masks; other seed or epoch, other masks
    assert torch.equal(Collator.from_dataset(dataset, seed=1)(items)["student_input_ids"], batch["student_input_ids"])
    other = Collator.from_dataset(dataset, seed=2)(items)["mlm_labels"]
    collator.set_epoch(1)
    assert not torch.equal(other, labels) and not torch.equal(collator(items)["mlm_labels"], labels)


def test_mlm_masking_statistics():
    vocab, specials, mask_id = 50, [0, 1, 2, 3], 3
    rng = np.random.default_rng(0)
    counts = np.zeros(vocab, dtype=np.int64)
    counts[4:] = 100
    counts[10] = 100_000  # one frequent token
    batches = []
    for _ in range(200):
        rows = []
        for _ in range(8):
            body = rng.choice(np.arange(4, vocab), size=60, p=counts[4:] / counts[4:].sum())
            rows.append(np.concatenate(([1], body, [2])).astype(np.int32))
        batches.append([{"index": len(batches) * 8 + r, "teacher_ids": row, "student_ids": row}
                        for r, row in enumerate(rows)])
    collator = Collator(None, teacher_pad_id=0, student_pad_id=0, student_mask_id=mask_id, student_vocab_size=vocab,
                        student_special_ids=specials, token_counts=counts, seed=5, split=False, chunks=False)
    chosen = replaced = rand = kept = plain = 0
    frequent = [0, 0]  # [masked, seen] for token 10
    rare = [0, 0]
    for items in batches:
        b = collator(items)
        orig, inp, labels = b["student_original_ids"], b["student_input_ids"], b["mlm_labels"]
        sel = labels != -100
        special = (orig < 4)
        assert not (sel & special).any(), "a special token was masked"
        plain += int((~special & b["student_attention_mask"].bool()).sum())
        chosen += int(sel.sum())
        replaced += int((inp[sel] == mask_id).sum())
        kept += int((inp[sel] == orig[sel]).sum())
        rand += int(((inp[sel] != mask_id) & (inp[sel] != orig[sel])).sum())
        frequent[0] += int((sel & (orig == 10)).sum())
        frequent[1] += int((orig == 10).sum())
        rare[0] += int((sel & (orig != 10) & ~special).sum())
        rare[1] += int(((orig != 10) & ~special).sum())
    assert abs(chosen / plain - 0.15) < 0.005
    assert abs(replaced / chosen - 0.8) < 0.02
    # random replacements sometimes draw the original token; they count as kept here
    assert abs(rand / chosen - 0.1) < 0.02 and abs(kept / chosen - 0.1) < 0.02
    # count^-0.7: the frequent token (1000x the count) is masked far less often than rare ones
    assert frequent[0] / frequent[1] < 0.25 * (rare[0] / rare[1])
    uniform = Collator(None, teacher_pad_id=0, student_pad_id=0, student_mask_id=mask_id, student_vocab_size=vocab,
                       student_special_ids=specials, token_counts=counts, smoothing=0.0, seed=5, split=False,
                       chunks=False)
    f = [0, 0]
    for items in batches[:50]:
        b = uniform(items)
        sel = b["mlm_labels"] != -100
        f[0] += int((sel & (b["student_original_ids"] == 10)).sum())
        f[1] += int((b["student_original_ids"] == 10).sum())
    assert abs(f[0] / f[1] - 0.15) < 0.03


def test_collator_needs_a_mask_token():
    with pytest.raises(ConfigError, match="no mask token"):
        Collator(None, teacher_pad_id=0, student_pad_id=0, student_mask_id=None, student_vocab_size=10,
                 split=False)


def test_length_grouped_sampler():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 500, size=1000)
    sampler = LengthGroupedSampler(lengths, 16, seed=3, mega_batch=10)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == list(LengthGroupedSampler(lengths, 16, seed=3, mega_batch=10))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    spread = np.mean([np.ptp(lengths[b]) for b in batches if len(b) > 1])
    random_spread = np.mean([np.ptp(lengths[rng.permutation(1000)[:16]]) for _ in range(50)])
    assert spread < 0.25 * random_spread
    capped = list(LengthGroupedSampler(lengths, 64, max_tokens=2000, seed=3))
    assert all(len(b) * lengths[b].max() <= 2000 for b in capped)
    assert sorted(i for b in capped for i in b) == list(range(1000))
    ranks = [list(LengthGroupedSampler(lengths, 16, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen))
    with pytest.raises(ConfigError):
        LengthGroupedSampler(lengths, 16, max_tokens=100)


def test_dataloader_with_workers_gives_the_same_batches(dataset):
    sampler = LengthGroupedSampler(dataset.lengths(), 8, seed=0)
    collator = Collator.from_dataset(dataset, seed=4)
    plain = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator))
    workers = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=2))
    assert len(plain) == len(workers) == len(sampler)
    for a, b in zip(plain, workers):
        for key in ("teacher_input_ids", "student_input_ids", "mlm_labels"):
            assert torch.equal(a[key], b[key])
        assert torch.equal(a["split"].indices, b["split"].indices)
        assert torch.equal(a["chunks"].student_indices, b["chunks"].student_indices)
    assert sum(len(b["index"]) for b in plain) == len(dataset)
    assert dataset.lengths("max").max() <= dataset.max_length
