"""The sha256 of every file a fixed-seed `vocabshrink demo --quick` writes, timings left out.

A restructuring that changes no behaviour leaves this list unchanged. JSON files are hashed after
dropping the keys that hold wall-clock figures (seconds, speeds, memory, dates), safetensors
files with their header's keys sorted (the library writes its metadata map in hash order);
plots and the markdown report, which print those figures, are listed without a hash.

    python benchmarks/demo_hashes.py --out /tmp/dh1 > before.txt
    ...change the code...
    python benchmarks/demo_hashes.py --out /tmp/dh1 > after.txt && diff before.txt after.txt

The reports record the folder's path: compare lists made with the same --out
(benchmarks/results/demo_hashes_c46e75d.txt, the code before the restructuring; demo_hashes_schedules.txt,
after distill moved to transformers' schedules, which warm up from 0 instead of 1/warmup: --out /tmp/dh1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

# keys whose values are measured on the clock, or name the machine or the moment
_TIMED = re.compile(r"(second|time|_s$|per_s|speed|elapsed|wall|date|rss|memory|mib|latency|throughput|"
                    r"tokens_per|sentences_per|steps_per|ms$|_ms_|torch_version|host|created)", re.I)
_UNHASHED = {".png", ".md"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _TIMED.search(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _canonical_safetensors(data: bytes) -> bytes:
    """The header with sorted keys, then the tensor bytes: safetensors writes its metadata map in hash order,
    so two writes of the same tensors can differ in the header's key order alone."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return json.dumps(header, sort_keys=True).encode() + data[8 + n:]


def file_hash(path: Path) -> str:
    """sha256 of a file; of its timing-free canonical form for .json and .jsonl."""
    if path.suffix in _UNHASHED:
        return "(timings: not hashed)"
    data = path.read_bytes()
    if path.suffix == ".json":
        data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".safetensors":
        data = _canonical_safetensors(data)
    elif path.suffix == ".jsonl":
        data = "\n".join(json.dumps(_strip(json.loads(ln)), sort_keys=True) for ln in data.decode().splitlines()).encode()
    return hashlib.sha256(data).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/dh1", help="the demo's folder (replaced)")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "vocabshrink.cli", "demo", "--quick", "--seed", "0", "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"{file_hash(path)}  {path.relative_to(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
