"""distill's data: the shards as a dataset, the epoch's global batches, a rank's micro-batches.

Imports `data` (the dataset and collate of the batch contract) and `errors`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...data import Collator, ShardDataset
from ...errors import ShardError


def open_data(paths: Sequence[str | Path], teacher_tokenizer: Any, student_tokenizer: Any, *, mode: str,
              mlm_probability: float, max_length: int | None, seed: int) -> tuple[ShardDataset, np.ndarray, Collator]:
    """(dataset, per-example lengths, collate callable) over shard folders made by `vocabshrink align`.

    The split table is the one align wrote into the shards (`table.safetensors`, checked by sha256).
    """
    dataset = ShardDataset([str(p) for p in paths], teacher_tokenizer, student_tokenizer)
    need = "split" if mode == "split" else "chunks"
    if not getattr(dataset, f"has_{need}"):
        raise ShardError(f"{paths[0]}: these shards were aligned with --alignment {dataset.alignment}, but --mode "
                         f"{mode} needs {'split' if mode == 'split' else 'offsets'} data; align again with "
                         "--alignment both, or change --mode")
    extra = {} if max_length is None else {"max_length": max_length}
    collate = Collator.from_dataset(dataset, mlm_probability=mlm_probability, seed=seed, split=mode == "split",
                                    chunks=mode == "offsets", **extra)
    return dataset, np.asarray(dataset.lengths("max")), collate


def global_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's global batches: a seeded shuffle, then examples of similar length grouped together.

    Sorting inside windows of 50 batches keeps padding low while the order of
    batches stays random. Only full batches are kept, so that every rank gets
    the same number of examples per step.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def collate(collator: Any, dataset: Any, indices: np.ndarray, epoch: int) -> dict[str, Any]:
    """A batch; MLM masks depend on (seed, epoch, example indices) alone, so resume and any rank split repeat them."""
    if hasattr(collator, "set_epoch"):
        collator.set_epoch(epoch)
    return collator([dataset[int(i)] for i in indices])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def seed_everything(*key: int) -> None:
    """Seed Python, numpy and torch from a key (e.g. seed, step, micro-batch)."""
    seq = np.random.SeedSequence(list(key))
    s = int(seq.generate_state(1, dtype=np.uint64)[0] % (2**63))
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


@dataclass
class Cursor:
    """Where the run is in its data: epoch, batch within the epoch, and what it has seen."""

    lengths: np.ndarray
    batch_size: int
    seed: int
    epoch: int = 0
    batch_in_epoch: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    batches: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shuffle()

    def shuffle(self) -> None:
        """The global batches of the current epoch."""
        self.batches = global_batches(self.lengths, self.batch_size, self.seed, self.epoch)

    def next_global_batch(self) -> np.ndarray:
        """The next global batch, starting a new (reshuffled) epoch when this one is used up."""
        if self.batch_in_epoch >= len(self.batches):
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.shuffle()
        b = self.batches[self.batch_in_epoch]
        self.batch_in_epoch += 1
        return b

    def micro_batches(self, collator: Any, dataset: Any, global_idx: np.ndarray, *, grad_accum: int, world: int,
                      rank: int, micro: int, device: torch.device) -> list[dict[str, Any]]:
        """This rank's slice of every accumulation micro-batch of a global batch, on `device`."""
        out = []
        for a in range(grad_accum):
            lo = (a * world + rank) * micro
            out.append(to_device(collate(collator, dataset, global_idx[lo:lo + micro], self.epoch), device))
        return out
