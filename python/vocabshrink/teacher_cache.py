"""The teacher-state cache: its files, its manifest, fingerprints, and reading it in place of a teacher forward.

`stages.cache_teacher` writes a cache; `distill --teacher-cache` reads it through `open_cache`. A cache holds,
for every shard file of the `align` folders it was made from, one safetensors file with the token states of
the chosen teacher layers (rows in the shard's own token order, float16 or bfloat16) and the pooled sentence
embedding of every example (the mean of the last layer over its tokens, float32); made with --logits-top-k K,
also per teacher token the K largest MLM logits (`logits_values`, the states' type), their ids (`logits_ids`,
int32) and the logsumexp of the whole row (`logits_lse`, float32). The manifest (`cache.json`) names the teacher
by the sha256 of its weights and config, each shard file by its sha256, and each cache file by its own; it holds
`logits_top_k` only when K > 0 (absent: no logits, as in caches made before logits existed). Imports `errors`,
`files` and `shards`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ModelError, ShardError
from .files import sha256_file
from .shards import memmap_safetensors, read_safetensors_header

FORMAT = "vocabshrink-teacher-cache"
FORMAT_VERSION = 1
MANIFEST = "cache.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size", "model_type")


def cache_file_name(index: int) -> str:
    return f"states-{index:05d}.safetensors"


def layer_key(layer: int) -> str:
    return f"layer_{layer}"


def teacher_fingerprint(teacher: str | Path) -> str:
    """sha256 over the teacher's config.json and weight files: another checkpoint of the same tokenizer differs."""
    from .models import WEIGHT_FILES

    folder = Path(teacher)
    parts = []
    for name in ("config.json", *WEIGHT_FILES):
        if (folder / name).exists():
            parts.append(f"{name}:{sha256_file(folder / name)}")
    if len(parts) < 2:
        raise ModelError(f"{folder}: no config.json and weights to fingerprint; pass a Hugging Face model folder")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def teacher_config(config: Any) -> dict[str, Any]:
    """What distill needs of the teacher's config when the teacher is not loaded."""
    return {k: getattr(config, k) for k in _CONFIG_KEYS}


def logits_top_k(manifest: dict) -> int:
    """K of a cache's top-K logits; 0 (no logits) for a manifest without the key."""
    return int(manifest.get("logits_top_k", 0))


def dense_logits(values: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor, vocab: int) -> torch.Tensor:
    """[n, vocab] float32 logits rebuilt from each row's top K values, their ids and the full row's logsumexp.

    Every id outside the top K gets the one value that gives the tail its true total mass,
    lse + log(max(1 - sum(exp(v - lse)), 1e-12) / (vocab - K)). All values stay finite (the KL's p * (log p - log q)
    never meets 0 * -inf), the top-K probabilities are exact at temperature 1, and the shared-vocabulary KL sees
    the tail tokens with equal weight. With K == vocab there is no tail and the row is the stored one.
    """
    values, lse = values.float(), lse.float()
    n, k = values.shape
    out = torch.empty(n, vocab, dtype=torch.float32)
    if k < vocab:
        # float64: the tail can be a small difference of numbers near 1
        top = torch.exp(values.double() - lse.double()[:, None]).sum(-1)
        fill = lse.double() + torch.log(torch.clamp(1 - top, min=1e-12) / (vocab - k))
        out[:] = fill.float()[:, None]
    return out.scatter_(1, ids.long(), values)


def read_cache_manifest(folder: Path) -> dict:
    """The manifest of a finished cache; ShardError naming what is wrong otherwise."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ShardError(f"{folder}: no such teacher cache; make one with `vocabshrink cache-teacher`")
    if not path.exists():
        raise ShardError(f"{path}: missing; {folder} is not a `vocabshrink cache-teacher` output")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc}); rerun `vocabshrink cache-teacher`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not a vocabshrink teacher-cache manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format version {manifest.get('format_version')}, this vocabshrink reads "
                         f"{FORMAT_VERSION}; rerun `vocabshrink cache-teacher`")
    if not manifest.get("complete"):
        raise ShardError(f"{path}: the cache-teacher run that writes this cache did not finish; rerun the same "
                         "`vocabshrink cache-teacher` command to finish it")
    return manifest


@dataclass
class TeacherOutput:
    """What a teacher forward gives the losses: per-layer token states (None where not held), the pooled
    sentence embedding of the last layer (None: pool the states) and logits (None without a head)."""

    hidden_states: list[torch.Tensor | None] | tuple[torch.Tensor, ...] | None
    pooled: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class CachedTeacher:
    """Reads a cache in place of a teacher forward, for the examples of one `ShardDataset`.

    Made by `open_cache`; `outputs(batch)` pads the cached rows of the batch's examples (its "index") into the
    shapes a forward would give. `config` carries the teacher's hidden size, layer count and vocabulary size;
    `top_k` is the number of logits per token the cache holds (0: none).
    """

    def __init__(self, config: dict[str, Any], layers: list[int], dtype: torch.dtype,
                 files: list[Path], rows: list[np.ndarray], dataset: Any, manifests: list[tuple[Path, dict]],
                 top_k: int = 0) -> None:
        self.config = SimpleNamespace(**config)
        self.layers = layers
        self.dtype = dtype
        self.top_k = top_k
        self._files = files  # per shard file of the dataset: its cache file
        self._rows = rows  # per shard file: the teacher_offsets of its examples
        self._dataset = dataset
        self._maps: list[dict[str, np.ndarray] | None] = [None] * len(files)
        self._manifests = manifests  # the checked cache manifests, for `for_dataset`

    def for_dataset(self, dataset: Any, verify: str = "sha256") -> "CachedTeacher":
        """The same cache over another dataset (e.g. the held-out shards), without checking the teacher again."""
        return _over(self._manifests, dataset, verify)

    def _map(self, i: int) -> dict[str, np.ndarray]:
        if self._maps[i] is None:
            self._maps[i] = memmap_safetensors(self._files[i])
        return self._maps[i]  # type: ignore[return-value]

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(arr))  # a copy: the memory map is read-only
        return t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t

    def outputs(self, batch: dict[str, Any], logits: bool = True) -> TeacherOutput:
        """The cached states of the batch's examples, padded to its teacher length, as float32 on its device;
        with `logits` and a cache that holds them, the dense logits [B, L_t, V_T] of `dense_logits` too
        (padding positions 0). `logits=False` skips that rebuild for callers that read states only."""
        mask = batch["teacher_attention_mask"]
        b, length = mask.shape
        width = int(self.config.hidden_size)
        states: list[torch.Tensor | None] = [None] * (int(self.config.num_hidden_layers) + 1)
        for layer in self.layers:
            states[layer] = torch.zeros(b, length, width, dtype=torch.float32)
        pooled = torch.zeros(b, width, dtype=torch.float32)
        vocab = int(self.config.vocab_size)
        dense = torch.zeros(b, length, vocab, dtype=torch.float32) if logits and self.top_k else None
        lengths = mask.sum(1).tolist()
        for row, index in enumerate(batch["index"].tolist()):
            s, j = self._dataset.locate(int(index))
            off = self._rows[s]
            lo, hi = int(off[j]), int(off[j + 1])
            if hi - lo != lengths[row]:
                raise ShardError(f"{self._files[s]}: example {index} has {hi - lo} cached teacher tokens, the batch "
                                 f"{lengths[row]}; the cache was made from other shards")
            a = self._map(s)
            for layer in self.layers:
                states[layer][row, :hi - lo] = self._tensor(a[layer_key(layer)][lo:hi]).float()
            pooled[row] = torch.from_numpy(np.array(a["pooled"][j]))
            if dense is not None:
                dense[row, :hi - lo] = dense_logits(self._tensor(a["logits_values"][lo:hi]),
                                                    torch.from_numpy(np.array(a["logits_ids"][lo:hi])),
                                                    torch.from_numpy(np.array(a["logits_lse"][lo:hi])), vocab)
        device = mask.device
        return TeacherOutput([None if t is None else t.to(device) for t in states], pooled.to(device),
                             None if dense is None else dense.to(device))


def open_cache(caches: Sequence[str | Path], dataset: Any, teacher: str | Path, *, layers: Sequence[int],
               logits: bool = False, verify: str = "sha256") -> CachedTeacher:
    """A `CachedTeacher` over `dataset` from one or several cache folders (parts made with --num-shards).

    Refuses, naming what differs: a cache of another teacher (fingerprint of `teacher`), one that lacks a shard
    file of `dataset` (other shards) or one of `layers`, one without logits when `logits` (the KL losses) are
    needed, an unfinished one and a corrupt file. For another dataset of the same run, `for_dataset` skips the
    teacher and settings checks done here.
    """
    return _over(_checked(caches, teacher, layers, logits), dataset, verify)


def _checked(caches: Sequence[str | Path], teacher: str | Path, layers: Sequence[int],
             logits: bool = False) -> list[tuple[Path, dict]]:
    """The caches' manifests, checked against the teacher's fingerprint, each other, the layers and the logits
    needed."""
    manifests = [(Path(c), read_cache_manifest(Path(c))) for c in caches]
    fp = teacher_fingerprint(teacher)
    first = manifests[0][1]
    for folder, m in manifests:
        if m["teacher"]["fingerprint"] != fp:
            raise ShardError(f"{folder}: made with another teacher (fingerprint {m['teacher']['fingerprint'][:12]}, "
                             f"{teacher} has {fp[:12]}); rerun `vocabshrink cache-teacher` with this teacher")
        for key in ("layers", "dtype", "logits_top_k"):
            if m.get(key) != first.get(key):
                raise ShardError(f"{folder}: {key}={m.get(key)!r}, but {manifests[0][0]} has {first.get(key)!r}; "
                                 "parts of one cache need the same settings")
    if logits and not logits_top_k(first):
        raise ShardError(f"{manifests[0][0]}: holds no teacher logits, which the KL losses (--kl-weight, "
                         "--match-weight) need; make the cache with `cache-teacher --logits-top-k K` (K = the "
                         "teacher's vocabulary size for the exact KL), or leave out --teacher-cache")
    missing = sorted(set(layers) - set(first["layers"]))
    if missing:
        raise ShardError(f"{manifests[0][0]}: holds teacher layers {first['layers']}, this run needs {sorted(layers)}"
                         f" (missing {missing}); rerun cache-teacher with --layers {','.join(map(str, sorted(layers)))}")
    return manifests


def _over(manifests: list[tuple[Path, dict]], dataset: Any, verify: str) -> CachedTeacher:
    """A `CachedTeacher` over `dataset` from checked manifests: each shard file's cache file, size/sha256-checked."""
    by_shard = {}
    for folder, m in manifests:
        for entry in m["files"]:
            by_shard[entry["shard_sha256"]] = (folder, entry)
    files, rows = [], []
    for s, (folder_path, shard_entry) in enumerate(dataset.shard_entries()):
        if shard_entry["sha256"] not in by_shard:
            raise ShardError(f"{', '.join(str(f) for f, _ in manifests)}: no cached states for {folder_path}/"
                             f"{shard_entry['file']}: the cache was made from other shards (or is a part made with "
                             "--num-shards; pass every part)")
        folder, entry = by_shard[shard_entry["sha256"]]
        path = folder / entry["file"]
        _check_cache_file(path, entry, verify)
        files.append(path)
        rows.append(np.asarray(dataset._shard(s)["teacher_offsets"]))
    first = manifests[0][1]
    return CachedTeacher(first["teacher"]["config"], list(first["layers"]), DTYPES[first["dtype"]], files, rows,
                         dataset, manifests, logits_top_k(first))


def _check_cache_file(path: Path, entry: dict, verify: str) -> None:
    if not path.exists():
        raise ShardError(f"{path}: missing; rerun `vocabshrink cache-teacher` to rewrite it")
    if path.stat().st_size != entry["bytes"]:
        raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated or "
                         "replaced); rerun `vocabshrink cache-teacher`")
    read_safetensors_header(path)
    if verify == "sha256" and sha256_file(path) != entry["sha256"]:
        raise ShardError(f"{path}: sha256 differs from the manifest (corrupt or changed); rerun "
                         "`vocabshrink cache-teacher`")
