"""The sentence corpus the quality benchmark trains on, built from ../shared/data (never STS-B).

WikiText-2 train (detokenized: its " @-@ " and " , " spacing undone, headings dropped), the SST-2 train
sentences, the English Tatoeba sentences and AG News, cut into sentences with `vocabshrink.corpus.split_sentences`,
shuffled with a fixed seed and written one a line. A held-out file of WikiText-2 valid sentences goes beside it.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from vocabshrink.corpus import split_sentences

SOURCES = ("wikitext2", "sst2", "tatoeba", "agnews")
_WIKI_FIXES = [(re.compile(r" @(.)@ "), r"\1"), (re.compile(r" ([.,;:!?)'\]])"), r"\1"), (re.compile(r"([(\[]) "), r"\1"),
               (re.compile(r" n't\b"), "n't"), (re.compile(r"<unk>"), "")]


def detokenize_wikitext(line: str) -> str:
    for pattern, repl in _WIKI_FIXES:
        line = pattern.sub(repl, line)
    return re.sub(r"\s+", " ", line).strip()


def _wikitext(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        out += split_sentences(detokenize_wikitext(line))
    return out


def _sst2(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r["sentence"].strip() for r in rows if r["sentence"].strip()]


def _lines(path: Path, sentences: bool) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [s for ln in lines for s in split_sentences(ln)] if sentences else lines


def build(data: Path, out: Path, sources: tuple[str, ...] = SOURCES, seed: int = 0,
          min_chars: int = 12) -> tuple[Path, Path, dict[str, int]]:
    """Write OUT/train.txt (shuffled sentences) and OUT/valid.txt; return their paths and the count per source."""
    en = data / "en"
    readers = {
        "wikitext2": lambda: _wikitext(en / "wikitext2/train.txt"),
        "sst2": lambda: _sst2(en / "sst2/train.tsv"),
        "tatoeba": lambda: _lines(en / "tatoeba/sentences.txt", sentences=False),
        "agnews": lambda: _lines(en / "agnews/news.txt", sentences=True),
    }
    counts, sentences = {}, []
    for name in sources:
        got = [s for s in readers[name]() if len(s) >= min_chars]
        counts[name] = len(got)
        sentences += got
    sentences = list(dict.fromkeys(sentences))  # exact duplicates once, first occurrence kept
    random.Random(seed).shuffle(sentences)
    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.txt"
    tmp = train.with_suffix(".tmp")
    tmp.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    tmp.replace(train)
    valid = out / "valid.txt"
    held = [s for s in _wikitext(en / "wikitext2/valid.txt") if len(s) >= min_chars][:2000]
    valid.write_text("\n".join(held) + "\n", encoding="utf-8")
    counts["total (deduplicated)"] = len(sentences)
    return train, valid, counts


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import DATA, ROOT

    print(build(DATA, ROOT / "runs" / "quality" / "corpus"))
