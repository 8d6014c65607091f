"""The shard format: file names, the manifest, checksums and memory-mapped reading.

The one place that knows how an `align` output folder is laid out: `stages.align`
writes it, `data.ShardDataset` (distill's reader) and `stages.inspect` read it.
Imports only `errors` and `files`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import ConfigError, ShardError
from .files import sha256_file

FORMAT = "vocabshrink-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLE = "table.safetensors"
COUNTS = "counts.safetensors"
REPORT = "align_report.json"
TEACHER_TOKENIZER = "teacher.tokenizer.json"
STUDENT_TOKENIZER = "student.tokenizer.json"
ALIGNMENTS = ("split", "offsets", "both")

# BF16 is read as its raw 16 bits (numpy has no bfloat16); the teacher cache views them as torch.bfloat16
_DTYPES = {"I32": np.int32, "I64": np.int64, "F32": np.float32, "BOOL": np.bool_, "U8": np.uint8, "F16": np.float16,
           "BF16": np.uint16}


def shard_name(index: int) -> str:
    """The file name of shard `index`."""
    return f"shard-{index:05d}.safetensors"


def read_safetensors_header(path: Path) -> tuple[int, dict]:
    """(data start, header) of a safetensors file; ShardError when it is not one."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ShardError(f"{path}: truncated (no safetensors header); rerun `vocabshrink align` to rewrite it")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            raise ShardError(f"{path}: corrupt safetensors header; rerun `vocabshrink align` to rewrite it")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ShardError(f"{path}: corrupt safetensors header; rerun `vocabshrink align` to rewrite it") from None
    return 8 + n, header


def memmap_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only memory map (nothing is read until used)."""
    start, header = read_safetensors_header(path)
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(x) for x in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ShardError(f"{path}: tensor {name!r} has an unsupported or malformed entry") from None
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or start + end > size or begin < 0:
            raise ShardError(f"{path}: tensor {name!r} does not fit the file (truncated or corrupt); "
                             "rerun `vocabshrink align` to rewrite it")
        if count == 0:
            out[name] = np.zeros(shape, dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
    return out


def check_parts(workers: int, num_shards: int, shard_index: int) -> None:
    """ConfigError for a bad --workers or --num-shards/--shard-index (align and cache-teacher write parts alike)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index must be in [0, --num-shards), got {shard_index} of {num_shards}")


def read_manifest(folder: Path) -> dict:
    """The manifest of a finished shard folder; ShardError naming what is wrong otherwise."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such shard folder; make one with `vocabshrink align`")
    if not path.exists():
        raise ShardError(f"{path}: missing; this is not a finished `vocabshrink align` output "
                         "(rerun align on it with the same settings)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc}); rerun `vocabshrink align`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not a vocabshrink shard manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format version {manifest.get('format_version')}, this vocabshrink reads "
                         f"{FORMAT_VERSION}; rerun `vocabshrink align` with this version")
    if not manifest.get("complete"):
        raise ShardError(f"{path}: the align run that writes this folder did not finish; "
                         "rerun the same `vocabshrink align` command to resume it")
    return manifest


def check_file(path: Path, sha: str, size: int | None, verify: str) -> None:
    """ShardError when a file listed in a manifest is missing, of another size or (verify="sha256") hash."""
    if not path.exists():
        raise ShardError(f"{path}: missing; rerun `vocabshrink align` on its folder to rewrite it")
    if size is not None and path.stat().st_size != size:
        raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {size} (truncated or "
                         "replaced); rerun `vocabshrink align` on its folder to rewrite it")
    if verify == "sha256" and sha256_file(path) != sha:
        raise ShardError(f"{path}: sha256 differs from the manifest (the file is corrupt or was changed); "
                         "rerun `vocabshrink align` on its folder to rewrite it")
