"""Training data from `align` shards: a memory-mapped Dataset, length-grouped batches, MLM masking, collate.

`ShardDataset(dirs, teacher_tokenizer, student_tokenizer)` reads one or several
shard folders (e.g. the parts written by `align --num-shards K --shard-index i`)
as one data set; `LengthGroupedSampler` yields seeded batches of similar length;
`Collator` turns a list of examples into the plain dict of tensors that `distill`
consumes (the batch contract: teacher batch, MLM-masked student batch, split span
data and offset-chunk data).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _core
from .aligner import Aligner, AlignmentBuffers, ChunkAlignment, SplitTable, fertility_histogram
from .errors import ConfigError, ShardError
from .shards import COUNTS, MANIFEST, TABLE, check_file, memmap_safetensors, read_manifest
from .tokenization import TokenizerLike, fingerprint, load_tokenizer

log = logging.getLogger(__name__)

_REQUIRED = {
    "teacher_ids": np.int32, "teacher_offsets": np.int64, "student_ids": np.int32, "student_offsets": np.int64,
    "doc_index": np.int64, "char_span": np.int64,
}
_CHUNKS = {"teacher_chunk_ends": np.int32, "student_chunk_ends": np.int32, "chunk_offsets": np.int64}


class ShardDataset(torch.utils.data.Dataset):
    """Examples of one or several shard folders, memory-mapped.

    Refuses folders made by other tokenizers (fingerprints), shards whose
    sha256, size or structure is wrong, and parts that disagree on settings.
    `verify="sha256"` hashes every file once at construction (about 1 s per GB);
    `verify="size"` checks sizes and structure only.
    """

    def __init__(
        self,
        dirs: str | os.PathLike | Sequence[str | os.PathLike],
        teacher_tokenizer: TokenizerLike,
        student_tokenizer: TokenizerLike,
        *,
        verify: str = "sha256",
    ) -> None:
        if verify not in ("sha256", "size"):
            raise ConfigError(f"verify must be 'sha256' or 'size', got {verify!r}")
        folders = [Path(dirs)] if isinstance(dirs, (str, os.PathLike)) else [Path(d) for d in dirs]
        if not folders:
            raise ShardError("no shard folder given")
        if len({f.resolve() for f in folders}) != len(folders):
            raise ShardError(f"the same shard folder is given twice: {[str(f) for f in folders]}")
        t_fp = fingerprint(load_tokenizer(teacher_tokenizer))
        s_fp = fingerprint(load_tokenizer(student_tokenizer))
        self.folders = folders
        self.manifests = [read_manifest(f) for f in folders]
        first = self.manifests[0]
        parts: set[tuple[int, int]] = set()
        for folder, m in zip(folders, self.manifests):
            where = folder / MANIFEST
            if m["teacher"]["fingerprint"] != t_fp:
                raise ShardError(f"{where}: made with another teacher tokenizer (fingerprint "
                                 f"{m['teacher']['fingerprint'][:12]}, given {t_fp[:12]}); align again with this "
                                 "teacher or pass the teacher the shards were made with")
            if m["student"]["fingerprint"] != s_fp:
                raise ShardError(f"{where}: made with another student tokenizer (fingerprint "
                                 f"{m['student']['fingerprint'][:12]}, given {s_fp[:12]}); align again with this "
                                 "student or pass the student the shards were made with")
            for key in ("max_length", "alignment", "prompt"):
                if m["settings"].get(key) != first["settings"].get(key):
                    raise ShardError(f"{where}: {key}={m['settings'].get(key)!r}, but {folders[0]} has "
                                     f"{first['settings'].get(key)!r}; parts of one data set need the same settings")
            if m["table"]["sha256"] != first["table"]["sha256"]:
                raise ShardError(f"{where}: its split table differs from {folders[0]}'s")
            part = (m["settings"]["num_shards"], m["settings"]["shard_index"])
            if part in parts and part != (1, 0):
                raise ShardError(f"{where}: part {part[1]} of {part[0]} is given twice")
            parts.add(part)
        self.settings = dict(first["settings"])
        self.alignment: str = self.settings["alignment"]
        self.max_length: int = int(self.settings["max_length"])
        self.teacher_info: dict = first["teacher"]
        self.student_info: dict = first["student"]
        self.has_split = self.alignment in ("split", "both")
        self.has_chunks = self.alignment in ("offsets", "both")

        self._files: list[Path] = []
        counts = []
        for folder, m in zip(folders, self.manifests):
            check_file(folder / TABLE, m["table"]["sha256"], None, verify)
            check_file(folder / COUNTS, m["counts"]["sha256"], None, verify)
            for entry in m["shards"]:
                path = folder / entry["file"]
                check_file(path, entry["sha256"], entry["bytes"], verify)
                self._files.append(path)
                counts.append(int(entry["examples"]))
        self._starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._starts[1:])
        self._maps: list[dict[str, np.ndarray]] | None = None
        for i, path in enumerate(self._files):
            self._check_structure(path, self._shard(i), counts[i])
        self._lengths: dict[str, np.ndarray] = {}

    # ---- integrity

    def _check_structure(self, path: Path, arrays: dict[str, np.ndarray], examples: int) -> None:
        def bad(why: str) -> ShardError:
            return ShardError(f"{path}: {why}; rerun `vocabshrink align` on its folder to rewrite it")

        need = dict(_REQUIRED, **(_CHUNKS if self.has_chunks else {}))
        for name, dtype in need.items():
            if name not in arrays:
                raise bad(f"no tensor {name!r}")
            if arrays[name].dtype != dtype:
                raise bad(f"tensor {name!r} is {arrays[name].dtype}, expected {np.dtype(dtype)}")
        sides = [("teacher", self.teacher_info["vocab_size"]), ("student", self.student_info["vocab_size"])]
        for side, vocab in sides:
            ids, off = arrays[f"{side}_ids"], arrays[f"{side}_offsets"]
            self._check_offsets(off, len(ids), examples, f"{side}_offsets", bad)
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                raise bad(f"{side} id outside [0, {vocab})")
            if len(off) > 1 and int(np.diff(off).max()) > self.max_length:
                raise bad(f"an example has more than max_length={self.max_length} {side} tokens")
        if arrays["doc_index"].shape != (examples,) or arrays["char_span"].shape != (examples, 2):
            raise bad("doc_index/char_span do not have one row per example")
        if self.has_chunks:
            c_off = arrays["chunk_offsets"]
            self._check_offsets(c_off, len(arrays["teacher_chunk_ends"]), examples, "chunk_offsets", bad)
            if len(arrays["student_chunk_ends"]) != len(arrays["teacher_chunk_ends"]):
                raise bad("the teacher and student sides have different numbers of chunks")
            for side in ("teacher", "student"):
                ends = arrays[f"{side}_chunk_ends"].astype(np.int64)
                lengths = np.diff(arrays[f"{side}_offsets"])
                if len(ends) == 0:
                    continue
                rows = np.repeat(np.arange(examples), np.diff(c_off))
                step = np.diff(ends, prepend=0)
                first = c_off[:-1][np.diff(c_off) > 0]
                step[first] = ends[first]
                if (step < 0).any() or (ends > lengths[rows]).any():
                    raise bad(f"{side} chunk ends are not increasing within their example")
                last = c_off[1:][np.diff(c_off) > 0] - 1
                if (ends[last] != lengths[np.diff(c_off) > 0]).any():
                    raise bad(f"{side} chunks do not end where their example ends")

    @staticmethod
    def _check_offsets(off: np.ndarray, total: int, examples: int, name: str, bad: Any) -> None:
        if off.shape != (examples + 1,):
            raise bad(f"{name} has {off.shape[0]} entries, the manifest says {examples} examples")
        if int(off[0]) != 0 or int(off[-1]) != total or (np.diff(off) < 0).any():
            raise bad(f"{name} are not increasing from 0 to the array's length")

    # ---- access

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = None  # reopened in each DataLoader worker; memory maps must not be copied
        return state

    def _shard(self, i: int) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = [None] * len(self._files)  # type: ignore[list-item]
        if self._maps[i] is None:
            self._maps[i] = memmap_safetensors(self._files[i])
        return self._maps[i]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, example within the shard) of a global example index."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} is outside [0, {len(self)})")
        index %= len(self)
        s = int(np.searchsorted(self._starts, index, "right")) - 1
        return s, index - int(self._starts[s])

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, j = self.locate(int(index))
        a = self._shard(s)
        item: dict[str, Any] = {"index": int(index) % len(self)}
        for side in ("teacher", "student"):
            off = a[f"{side}_offsets"]
            item[f"{side}_ids"] = np.array(a[f"{side}_ids"][off[j]:off[j + 1]])
        if self.has_chunks:
            c0, c1 = a["chunk_offsets"][j], a["chunk_offsets"][j + 1]
            item["teacher_chunk_ends"] = np.array(a["teacher_chunk_ends"][c0:c1])
            item["student_chunk_ends"] = np.array(a["student_chunk_ends"][c0:c1])
        return item

    def shard_entries(self) -> list[tuple[Path, dict]]:
        """(folder, manifest entry) of every shard file, in the dataset's order."""
        return [(folder, entry) for folder, m in zip(self.folders, self.manifests) for entry in m["shards"]]

    def source(self, index: int) -> tuple[int, int, int]:
        """(document number in the corpus, first character, end character) of an example."""
        s, j = self.locate(index)
        a = self._shard(s)
        return int(a["doc_index"][j]), int(a["char_span"][j, 0]), int(a["char_span"][j, 1])

    def lengths(self, side: str = "max") -> np.ndarray:
        """Per-example token counts: "teacher", "student", "split" (split teacher tokens) or "max" of them."""
        if side not in self._lengths:
            if side in ("teacher", "student"):
                parts = [np.diff(self._shard(i)[f"{side}_offsets"]) for i in range(len(self._files))]
                value = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            elif side == "split":
                sizes = np.diff(self.table().offsets)
                parts = []
                for i in range(len(self._files)):
                    a = self._shard(i)
                    per_token = np.concatenate(([0], np.cumsum(sizes[a["teacher_ids"]], dtype=np.int64)))
                    parts.append(np.diff(per_token[a["teacher_offsets"]]))
                value = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            elif side == "max":
                value = np.maximum(self.lengths("teacher"), self.lengths("student"))
                if self.has_split:
                    value = np.maximum(value, self.lengths("split"))
            else:
                raise ValueError(f"side must be teacher, student, split or max, got {side!r}")
            self._lengths[side] = value
        return self._lengths[side]

    def table(self) -> SplitTable:
        """The teacher -> student split table the shards were made with."""
        a = memmap_safetensors(self.folders[0] / TABLE)
        return SplitTable(np.array(a["offsets"]), np.array(a["ids"]))

    def token_counts(self, side: str = "student") -> np.ndarray:
        """How often each id occurs in all folders (int64 [vocab size]); side is "student" or "teacher"."""
        total = None
        for folder in self.folders:
            counts = np.array(memmap_safetensors(folder / COUNTS)[f"{side}_counts"])
            total = counts if total is None else total + counts
        assert total is not None
        return total

    def text_counts(self, side: str = "student") -> np.ndarray:
        """`token_counts` as float64 with the special tokens zeroed (UNK kept): the text's own tokens."""
        info = self.teacher_info if side == "teacher" else self.student_info
        counts = self.token_counts(side).astype(np.float64)
        unk = info["roles"].get("unk")
        counts[[i for i in info["special_ids"] if i < len(counts) and i != unk]] = 0
        return counts

    def fertility(self) -> tuple[dict[str, float], float]:
        """(histogram of student pieces per teacher text token, their mean) over all folders."""
        sizes = np.diff(self.table().offsets)
        counts = self.text_counts("teacher")
        return fertility_histogram(sizes, counts), float((sizes * counts).sum() / max(counts.sum(), 1.0))


# --------------------------------------------------------------------------- batches


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Seeded batches of examples of similar length (a `batch_sampler` for DataLoader).

    Each epoch shuffles the examples, cuts them into mega-batches of
    `mega_batch` batches, sorts each by length and cuts it into batches of at
    most `batch_size` examples and, with `max_tokens`, at most that many padded
    tokens; then shuffles the batch order. With `num_replicas` > 1 each rank
    gets every `num_replicas`-th batch and all ranks the same number.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int = 32,
        *,
        max_tokens: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        mega_batch: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, num_replicas), got {rank} of {num_replicas}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if max_tokens is not None and len(self.lengths) and int(self.lengths.max()) > max_tokens:
            raise ConfigError(f"max_tokens={max_tokens} is smaller than the longest example "
                              f"({int(self.lengths.max())} tokens)")
        self.batch_size, self.max_tokens, self.seed = batch_size, max_tokens, seed
        self.shuffle, self.drop_last, self.mega_batch = shuffle, drop_last, mega_batch
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        size = self.batch_size * self.mega_batch
        batches: list[list[int]] = []
        for start in range(0, n, size):
            chunk = order[start:start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batch: list[int] = []
            longest = 0
            for idx in chunk.tolist():
                longest_if = max(longest, int(self.lengths[idx]))
                full = len(batch) >= self.batch_size or (
                    self.max_tokens is not None and longest_if * (len(batch) + 1) > self.max_tokens)
                if batch and full:
                    batches.append(batch)
                    batch, longest_if = [], int(self.lengths[idx])
                batch.append(idx)
                longest = longest_if
            if batch:
                batches.append(batch)
        if self.drop_last and self.max_tokens is None:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        mine = batches[self.rank::self.num_replicas][:per_rank]
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


# --------------------------------------------------------------------------- collate


def _pad(rows: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 [B, L] and its attention mask."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    mask = np.arange(width)[None, :] < lengths[:, None]
    out = np.full((len(rows), width), pad, dtype=np.int64)
    if len(rows):
        out[mask] = np.concatenate(rows)
    return out, mask.astype(np.int64)


class Collator:
    """Builds a training batch (a plain dict of tensors, see the batch contract in the README).

    `table` is the split table (`ShardDataset.table()`) or an `Aligner`. MLM
    masking picks `mlm_probability` of the student's non-special tokens in the
    batch, weighted by count^-`smoothing` (DistilBERT's smoothing, counts from
    `token_counts`; uniform without), and replaces 80% with the mask token, 10%
    with a random non-special token and keeps 10%. The random stream depends on
    `seed`, `set_epoch()` and the example indices only, so batches are the same
    whatever the DataLoader's worker count.
    """

    def __init__(
        self,
        table: SplitTable | Aligner | None,
        *,
        teacher_pad_id: int,
        student_pad_id: int,
        student_mask_id: int | None,
        student_vocab_size: int,
        student_special_ids: Sequence[int] = (),
        token_counts: np.ndarray | None = None,
        mlm_probability: float = 0.15,
        smoothing: float = 0.7,
        seed: int = 0,
        max_length: int | None = None,
        split: bool = True,
        chunks: bool = True,
        reduce: str = "mean",
    ) -> None:
        if not 0.0 <= mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in [0, 1), got {mlm_probability}")
        if mlm_probability > 0 and student_mask_id is None:
            raise ConfigError("the student tokenizer has no mask token; pass mlm_probability=0 or add one")
        if split and table is None:
            raise ConfigError("split=True needs the split table")
        self.teacher_pad_id, self.student_pad_id = int(teacher_pad_id), int(student_pad_id)
        self.student_mask_id = None if student_mask_id is None else int(student_mask_id)
        self.mlm_probability, self.seed, self.epoch = float(mlm_probability), int(seed), 0
        self.max_length, self.split, self.chunks, self.reduce = max_length, split, chunks, reduce
        self.aligner = table if isinstance(table, Aligner) else None
        self.table = table.table if isinstance(table, Aligner) else table
        special = np.zeros(student_vocab_size, dtype=bool)
        special[[i for i in student_special_ids if 0 <= i < student_vocab_size]] = True
        self.special = special
        self.random_pool = np.flatnonzero(~special)
        if token_counts is not None:
            counts = np.asarray(token_counts, dtype=np.float64)
            if counts.shape != (student_vocab_size,):
                raise ConfigError(f"token_counts has shape {counts.shape}, expected ({student_vocab_size},)")
            weights = np.maximum(counts, 1.0) ** -float(smoothing)
        else:
            weights = np.ones(student_vocab_size)
        weights[special] = 0.0
        self.weights = weights
        self._core: Any = None

    @classmethod
    def from_dataset(cls, dataset: ShardDataset, **kwargs: Any) -> "Collator":
        """A collator with the table, special ids and token counts of `dataset`; kwargs override."""
        t_roles, s_roles = dataset.teacher_info["roles"], dataset.student_info["roles"]
        defaults: dict[str, Any] = dict(
            teacher_pad_id=t_roles.get("pad", t_roles.get("unk", 0)),
            student_pad_id=s_roles.get("pad", s_roles.get("unk", 0)),
            student_mask_id=s_roles.get("mask"),
            student_vocab_size=dataset.student_info["vocab_size"],
            student_special_ids=dataset.student_info["special_ids"],
            token_counts=dataset.token_counts("student"),
            max_length=dataset.max_length,
            split=dataset.has_split,
            chunks=dataset.has_chunks,
        )
        defaults.update(kwargs)
        table = defaults.pop("table", dataset.table() if defaults["split"] else None)
        return cls(table, **defaults)

    def set_epoch(self, epoch: int) -> None:
        """Vary the masks per epoch (DataLoader workers copy the collator when an iterator starts)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_core"] = None  # the C++ aligner is rebuilt in each worker
        return state

    def _align(self, ids: np.ndarray, lengths: np.ndarray) -> Any:
        try:
            if self.aligner is not None:
                return self.aligner.align(ids, lengths=lengths, max_length=self.max_length, reduce=self.reduce)
            if self._core is None:
                self._core = _core.SpanAligner(self.table.offsets, self.table.ids, self.student_pad_id,
                                               len(self.special))
            buffers = AlignmentBuffers()  # fresh: the tensors handed out share these arrays
            ml = -1 if self.max_length is None else int(self.max_length)
            return buffers.expand(self._core, ids, lengths, None, ml, self.reduce)
        except ValueError as exc:  # ids the split table does not cover: shards of another teacher
            raise ShardError(f"the shards do not fit the teacher's split table: {exc}") from None

    def mask(self, ids: np.ndarray, attention: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels with -100 where not masked) for a padded int64 batch."""
        labels = np.full_like(ids, -100)
        masked = ids.copy()
        if self.mlm_probability == 0:
            return masked, labels
        flat = ids.ravel()
        cand = np.flatnonzero(attention.ravel().astype(bool) & ~self.special[flat])
        if len(cand) == 0:
            return masked, labels
        n = max(1, int(round(self.mlm_probability * len(cand))))
        # Weighted sampling without replacement (Efraimidis-Spirakis): the n largest log(u)/w.
        with np.errstate(divide="ignore"):
            keys = np.log(rng.random(len(cand))) / self.weights[flat[cand]]
        chosen = cand[np.argpartition(-keys, n - 1)[:n]] if n < len(cand) else cand
        labels.ravel()[chosen] = flat[chosen]
        action = rng.random(len(chosen))
        out = masked.ravel()
        out[chosen[action < 0.8]] = self.student_mask_id
        rand = chosen[(action >= 0.8) & (action < 0.9)]
        out[rand] = rng.choice(self.random_pool, size=len(rand))
        return masked, labels

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        indices = [int(it.get("index", i)) for i, it in enumerate(items)]
        rng = np.random.default_rng([self.seed, self.epoch, *indices])
        t_ids, t_mask = _pad([it["teacher_ids"] for it in items], self.teacher_pad_id)
        s_ids, s_mask = _pad([it["student_ids"] for it in items], self.student_pad_id)
        masked, labels = self.mask(s_ids, s_mask, rng)
        batch: dict[str, Any] = {
            "index": torch.tensor(indices, dtype=torch.int64),
            "teacher_input_ids": torch.from_numpy(t_ids),
            "teacher_attention_mask": torch.from_numpy(t_mask),
            "student_input_ids": torch.from_numpy(masked),
            "student_attention_mask": torch.from_numpy(s_mask),
            "student_original_ids": torch.from_numpy(s_ids),
            "mlm_labels": torch.from_numpy(labels),
        }
        if self.split:
            lengths = t_mask.sum(axis=1).astype(np.int64)
            batch["split"] = self._align(t_ids, lengths).to_torch()
        if self.chunks:
            if "teacher_chunk_ends" not in items[0]:
                raise ShardError("these shards hold no offset chunks (aligned with --alignment split); "
                                 "make the collator with chunks=False")
            batch["chunks"] = ChunkAlignment.from_chunk_ends(
                [it["teacher_chunk_ends"] for it in items], [it["student_chunk_ends"] for it in items],
                t_ids.shape[1], s_ids.shape[1]).to_torch()
        return batch
