"""cache-teacher: run the teacher once over aligned shards and store what distill's losses read.

Every epoch of `distill` recomputes the same teacher states; with the cache a distill step runs the student
only. One cache file per shard file, written atomically and recorded in `cache.json` as it lands: an
interrupted run, rerun with the same command, keeps the finished files and recomputes the rest, and ends
with the same bytes as a run that was never interrupted. Format and reading: `vocabshrink.teacher_cache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import ShardDataset
from ..errors import ConfigError, ShardError
from ..files import sha256_file, write_atomic, write_json_atomic
from ..models import encoder, has_mlm_head, load_teacher, mlm_head, resolve_dtype
from ..progress import progress_bar
from ..shards import STUDENT_TOKENIZER, check_parts, read_manifest
from ..teacher_cache import (DTYPES, FORMAT, FORMAT_VERSION, MANIFEST, cache_file_name, layer_key, teacher_config,
                             teacher_fingerprint)
from ..tokenization import load_tokenizer

log = logging.getLogger(__name__)

BATCH_TOKENS = 2048  # padded tokens per teacher batch: as fast as 8192 on the 2-core CPU (bench_distill), less memory
HEAD_VALUES = 1 << 22  # logits per head call (16 MB in float32): a 250k vocabulary must not hold a batch's rows at once
TEACHER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class CacheReport:
    """What `cache_teacher` wrote; also `OUT/cache_report.json`."""

    out: str
    teacher: str
    teacher_fingerprint: str
    layers: list[int]
    dtype: str
    logits_top_k: int  # logits kept per teacher token (0: none)
    part: int
    parts: int
    files: int
    files_reused: int
    examples: int
    teacher_tokens: int
    bytes: int
    bytes_per_token: float  # everything in the cache files: states, pooled rows and logits
    seconds: float
    tokens_per_s: float  # of the files computed by this run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def cache_teacher(teacher: str | Path, data: Sequence[str | Path], out: str | Path, *,
                  layers: Sequence[int] | None = None, dtype: str = "float16", batch_tokens: int = BATCH_TOKENS,
                  teacher_dtype: str = "auto", workers: int = 1, num_shards: int = 1, shard_index: int = 0,
                  logits_top_k: int = 0, verify: str = "sha256", progress: bool = True) -> CacheReport:
    """Cache the teacher's token states of `layers` (default: the last) and pooled sentence embeddings.

    Writes one file per shard file of `data` whose number is `shard_index` modulo `num_shards`; `workers`
    processes compute files side by side (each with cores / workers threads). `teacher_dtype` is the teacher's
    compute type: "auto" is bf16 on CPUs with bfloat16 instructions, else fp32 (the states are stored as `dtype`).
    `logits_top_k` K > 0 also keeps each token's K largest MLM logits and its logsumexp (for the KL losses; the
    teacher needs an MLM head).
    """
    started = time.perf_counter()
    _validate(dtype, batch_tokens, workers, num_shards, shard_index)
    if teacher_dtype not in (*TEACHER_DTYPES, "auto"):
        raise ConfigError(f"--teacher-dtype must be one of auto, {', '.join(TEACHER_DTYPES)}, got {teacher_dtype!r}")
    teacher_dtype = resolve_dtype(teacher_dtype)
    teacher, out = Path(teacher), Path(out)
    dataset = _dataset(teacher, data, verify)
    config = _config(teacher)
    chosen = _layers(layers, int(config["num_hidden_layers"]))
    _check_top_k(teacher, logits_top_k, int(config["vocab_size"]))
    manifest = _manifest(teacher, config, chosen, dtype, dataset, num_shards, shard_index)
    manifest["teacher_dtype"] = teacher_dtype
    if logits_top_k:  # absent at K = 0: such a cache.json keeps the bytes it had before logits existed
        manifest["logits_top_k"] = logits_top_k
        manifest["logits_vocab_size"] = int(config["vocab_size"])
    old = _previous(out, manifest)
    todo = [s for s in range(len(manifest["shard_files"])) if s % num_shards == shard_index]
    entries = {s: old[s] for s in todo if s in old}
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.tmp"):  # left by an interrupted write
        stale.unlink()
    computed_tokens = 0
    compute = [s for s in todo if s not in entries]
    total = sum(manifest["shard_files"][s]["tokens"] for s in compute)
    with progress_bar(progress, total=total, desc="cache-teacher", unit="tok", dynamic_ncols=True) as bar:
        for s, entry in _run(compute, teacher, [str(d) for d in data], out, chosen, dtype, batch_tokens,
                             teacher_dtype, logits_top_k, workers, dataset):
            entries[s] = entry
            computed_tokens += entry["tokens"]
            bar.update(entry["tokens"])
            _write_manifest(out, manifest, entries, complete=False)
    seconds = time.perf_counter() - started
    _write_manifest(out, manifest, entries, complete=True)
    report = _report(out, manifest, entries, len(entries) - len(compute), seconds, computed_tokens)
    write_atomic(out / "cache_report.json", report.to_json() + "\n")
    return report


def _validate(dtype: str, batch_tokens: int, workers: int, num_shards: int, shard_index: int) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_tokens < 1:
        raise ConfigError(f"--batch-tokens must be at least 1, got {batch_tokens}")
    check_parts(workers, num_shards, shard_index)


def _check_top_k(teacher: Path, top_k: int, vocab: int) -> None:
    """--logits-top-k in [0, vocab]; K > 0 needs an MLM head, refused here, before any file is written (a worker
    process that fails to load the teacher would be restarted by its pool without end)."""
    if not 0 <= top_k <= vocab:
        raise ConfigError(f"--logits-top-k must be in [0, {vocab}] (0: no logits; at most the teacher's vocabulary "
                          f"size), got {top_k}")
    if top_k and not has_mlm_head(teacher):
        load_teacher(teacher, need_logits=True, dtype=torch.float32, device="cpu")  # raises its ModelError, unloaded


def _dataset(teacher: Path, data: Sequence[str | Path], verify: str) -> ShardDataset:
    """The shards, checked against the teacher's tokenizer (their own copy of the student's)."""
    if not data:
        raise ConfigError("no --data shards given")
    folders = [Path(d) for d in data]
    read_manifest(folders[0])  # names a missing or unfinished folder
    student = folders[0] / STUDENT_TOKENIZER
    if not student.exists():
        raise ShardError(f"{folders[0]}: no {STUDENT_TOKENIZER}; this is not a `vocabshrink align` output")
    return ShardDataset(folders, load_tokenizer(teacher), load_tokenizer(student), verify=verify)


def _config(teacher: Path) -> dict[str, Any]:
    from ..models import read_config

    return teacher_config(read_config(teacher))


def _layers(layers: Sequence[int] | None, n: int) -> list[int]:
    """Sorted teacher layers (0 = embedding output, negatives from the end); default the last."""
    if not layers:
        return [n]
    out = sorted({int(x) + n + 1 if int(x) < 0 else int(x) for x in layers})
    bad = [x for x in out if not 0 <= x <= n]
    if bad:
        raise ConfigError(f"--layers: {bad} out of range; the teacher has layers 0..{n} (0 = embedding output)")
    return out


def _manifest(teacher: Path, config: dict, layers: list[int], dtype: str, dataset: ShardDataset, num_shards: int,
              shard_index: int) -> dict[str, Any]:
    """The settings part of the manifest, and `shard_files`: per shard file, its sha256, examples and tokens."""
    plan = []
    for s, (folder, m) in enumerate(dataset.shard_entries()):
        tokens = int(np.asarray(dataset._shard(s)["teacher_offsets"])[-1])
        plan.append({"folder": str(folder), "shard": m["file"], "shard_sha256": m["sha256"],
                     "examples": int(m["examples"]), "tokens": tokens})
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "teacher": {"path": str(teacher), "fingerprint": teacher_fingerprint(teacher), "config": config},
            "layers": layers, "dtype": dtype, "pooled": "mean of the last layer over each example's tokens, float32",
            "num_shards": num_shards, "shard_index": shard_index, "shard_files": plan}


_SAME = ("format", "format_version", "layers", "dtype", "teacher_dtype", "num_shards", "shard_index", "logits_top_k")


def _previous(out: Path, manifest: dict) -> dict[int, dict]:
    """The intact files of an earlier run with the same settings, by shard number; refuse other settings."""
    path = out / MANIFEST
    if not path.exists():
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out}: not empty and holds no teacher cache; pass an empty or new --out")
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ShardError(f"{path}: not valid JSON; delete {out} and run again") from None
    changed = [k for k in _SAME if old.get(k) != manifest.get(k)]  # logits_top_k: absent at K = 0
    if old.get("teacher", {}).get("fingerprint") != manifest["teacher"]["fingerprint"]:
        changed.append("teacher")
    shas = [p["shard_sha256"] for p in manifest["shard_files"]]
    if [p.get("shard_sha256") for p in old.get("shard_files", [])] != shas:
        changed.append("data")
    if changed:
        raise ConfigError(f"{out}: holds a cache made with other {', '.join(changed)}; pass another --out "
                          "(or delete it)")
    kept = {}
    for entry in old.get("files", []):
        file = out / entry["file"]
        if file.exists() and file.stat().st_size == entry["bytes"] and sha256_file(file) == entry["sha256"]:
            kept[int(entry["index"])] = entry
        else:
            log.warning("%s: missing or changed; computing it again", file)
    return kept


def _write_manifest(out: Path, manifest: dict, entries: dict[int, dict], complete: bool) -> None:
    files = [entries[s] for s in sorted(entries)]
    write_json_atomic(out / MANIFEST, {**manifest, "files": files, "complete": complete})


def _report(out: Path, manifest: dict, entries: dict[int, dict], reused: int, seconds: float,
            computed_tokens: int) -> CacheReport:
    files = list(entries.values())
    tokens = sum(e["tokens"] for e in files)
    size = sum(e["bytes"] for e in files)
    return CacheReport(
        out=str(out), teacher=manifest["teacher"]["path"], teacher_fingerprint=manifest["teacher"]["fingerprint"],
        layers=manifest["layers"], dtype=manifest["dtype"], logits_top_k=manifest.get("logits_top_k", 0),
        part=manifest["shard_index"], parts=manifest["num_shards"], files=len(files), files_reused=reused,
        examples=sum(e["examples"] for e in files), teacher_tokens=tokens, bytes=size,
        bytes_per_token=round(size / max(tokens, 1), 1), seconds=round(seconds, 2),
        tokens_per_s=round(computed_tokens / max(seconds, 1e-9), 1))


# --------------------------------------------------------------------------- computing (in-process or in workers)


def _run(todo: list[int], teacher: Path, data: list[str], out: Path, layers: list[int], dtype: str,
         batch_tokens: int, teacher_dtype: str, top_k: int, workers: int, dataset: ShardDataset) -> Any:
    """(shard number, manifest entry) of each file as it is written; in order with one worker, which reuses the
    caller's open `dataset` (worker processes open their own)."""
    args = (str(teacher), data, str(out), layers, dtype, batch_tokens, teacher_dtype, top_k)
    if workers == 1 or len(todo) <= 1:
        state = _Worker(*args, dataset=dataset)
        for s in todo:
            yield s, state.write(s)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(*args, threads)) as pool:
        yield from pool.imap(_work, todo)


_WORKER: "_Worker | None" = None


def _init_worker(teacher: str, data: list[str], out: str, layers: list[int], dtype: str, batch_tokens: int,
                 teacher_dtype: str, top_k: int, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = _Worker(teacher, data, out, layers, dtype, batch_tokens, teacher_dtype, top_k)


def _work(s: int) -> tuple[int, dict]:
    assert _WORKER is not None
    return s, _WORKER.write(s)


class _Worker:
    """The teacher and the shards of one process; `write(s)` computes and writes shard file s's cache file.

    The encoder gives the states as without logits (the same bytes); with `top_k` > 0 the MLM head then runs on
    each example's real last-layer rows only, never on padding (a model whose head `mlm_head` does not find runs
    whole, and its logits are taken instead).
    """

    def __init__(self, teacher: str, data: list[str], out: str, layers: list[int], dtype: str,
                 batch_tokens: int = BATCH_TOKENS, teacher_dtype: str = "fp32", top_k: int = 0,
                 dataset: ShardDataset | None = None) -> None:
        self.dataset = dataset if dataset is not None else _dataset(Path(teacher), data, "size")
        full = load_teacher(teacher, need_logits=top_k > 0, dtype=TEACHER_DTYPES[teacher_dtype],
                            device=torch.device("cpu"))
        self.head = mlm_head(full) if top_k else None
        self.model = full if top_k and self.head is None else encoder(full)
        self.top_k = top_k
        self.pad = int(self.dataset.teacher_info["roles"].get("pad", self.dataset.teacher_info["roles"].get("unk", 0)))
        self.out, self.layers, self.dtype, self.batch_tokens = Path(out), layers, DTYPES[dtype], batch_tokens

    def write(self, s: int) -> dict:
        """Compute shard file s's states, write its cache file atomically, return its manifest entry."""
        from safetensors.torch import save

        arrays = self.dataset._shard(s)
        ids, off = np.asarray(arrays["teacher_ids"]), np.asarray(arrays["teacher_offsets"]).astype(np.int64)
        raw = save(self.states(ids, off))
        name = cache_file_name(s)
        write_atomic(self.out / name, raw)
        folder, shard = self.dataset.shard_entries()[s]
        return {"index": s, "file": name, "folder": str(folder), "shard": shard["file"],
                "shard_sha256": shard["sha256"], "examples": len(off) - 1, "tokens": int(off[-1]),
                "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}

    @torch.no_grad()
    def states(self, ids: np.ndarray, off: np.ndarray) -> dict[str, torch.Tensor]:
        """The chosen layers' token states (rows in the shard's order), every example's pooled last layer and,
        with `top_k`, the top-K logits, their ids and each row's logsumexp (rows in the same order)."""
        lengths = np.diff(off)
        width = int(self.model.config.hidden_size)
        last = int(self.model.config.num_hidden_layers)
        out = {layer_key(layer): torch.zeros(int(off[-1]), width, dtype=self.dtype) for layer in self.layers}
        if self.top_k:
            out.update(logits_values=torch.zeros(int(off[-1]), self.top_k, dtype=self.dtype),
                       logits_ids=torch.zeros(int(off[-1]), self.top_k, dtype=torch.int32),
                       logits_lse=torch.zeros(int(off[-1]), dtype=torch.float32))
        pooled = torch.zeros(len(lengths), width, dtype=torch.float32)
        for batch in _batches(lengths, self.batch_tokens):
            longest = int(lengths[batch].max())
            input_ids = torch.full((len(batch), longest), self.pad, dtype=torch.int64)
            mask = torch.zeros((len(batch), longest), dtype=torch.int64)
            for r, j in enumerate(batch):
                n = int(lengths[j])
                input_ids[r, :n] = torch.from_numpy(ids[off[j]:off[j + 1]].astype(np.int64))
                mask[r, :n] = 1
            result = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            hidden = result.hidden_states
            m = mask.unsqueeze(-1).float()
            pooled[batch] = (hidden[last].float() * m).sum(1) / m.sum(1).clamp(min=1)
            for r, j in enumerate(batch):
                n = int(lengths[j])
                for layer in self.layers:
                    out[layer_key(layer)][off[j]:off[j + 1]] = hidden[layer][r, :n].to(self.dtype)
                if self.top_k:
                    rows = hidden[last][r, :n] if self.head is not None else result.logits[r, :n]
                    self._top_logits(rows, out, int(off[j]))
        out["pooled"] = pooled
        return out

    def _top_logits(self, rows: torch.Tensor, out: dict[str, torch.Tensor], start: int) -> None:
        """Write the top-K logits, ids and logsumexp of last-layer `rows` (logits already without a separate
        head) into `out` from row `start`, a bounded number of rows per head call."""
        step = max(1, HEAD_VALUES // int(self.model.config.vocab_size))
        for lo in range(0, rows.shape[0], step):
            logits = (self.head(rows[lo:lo + step]) if self.head is not None else rows[lo:lo + step]).float()
            top = logits.topk(self.top_k, dim=-1)
            at = slice(start + lo, start + lo + logits.shape[0])
            out["logits_values"][at] = top.values.to(self.dtype)
            out["logits_ids"][at] = top.indices.to(torch.int32)
            out["logits_lse"][at] = torch.logsumexp(logits, dim=-1)


def _batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Examples sorted by length, cut into batches of at most `batch_tokens` padded tokens (at least one
    example each): the same batches for a shard file whatever else the run does, so its bytes repeat."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * int(lengths[order[end]]) <= batch_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches
