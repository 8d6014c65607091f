"""Read text: .txt, .gz, .jsonl (a text field), folders, globs and stdin, streamed."""

from __future__ import annotations

import glob
import gzip
import io
import json
import re
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import CorpusError

TEXT_SUFFIXES = (".txt", ".text", ".gz", ".jsonl", ".json", ".tokens", ".raw", ".md", ".rst")


def resolve_paths(sources: Iterable[str | os.PathLike]) -> list[str]:
    """Files from paths, folders (recursive, text-like files only) and globs, in a stable order; '-' is stdin."""
    out: list[str] = []
    for src in sources:
        s = str(src)
        if s == "-":
            out.append("-")
            continue
        p = Path(s)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.endswith(TEXT_SUFFIXES))
            if not files:
                raise CorpusError(f"{s}: folder holds no text files ({', '.join(TEXT_SUFFIXES)})")
            out += files
        elif p.is_file():
            out.append(s)
        elif any(ch in s for ch in "*?["):
            matches = sorted(m for m in glob.glob(s, recursive=True) if Path(m).is_file())
            if not matches:
                raise CorpusError(f"{s}: the pattern matches no file")
            out += matches
        else:
            raise CorpusError(f"{s}: no such file or folder")
    if not out:
        raise CorpusError("no corpus given: pass files, folders, globs or - for stdin")
    return out


def _open_binary(path: str) -> io.BufferedIOBase:
    if path == "-":
        return sys.stdin.buffer
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror})") from exc


def _decode(raw: bytes, path: str, lineno: int, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}, line {lineno}: invalid UTF-8 at byte {exc.start} ({raw[exc.start:exc.start + 4]!r}); "
            "fix the file or pass --errors replace"
        ) from None


_BLOCK = 1 << 18  # bytes read at a time: whole lines are decoded and split in C, not one by one in Python


def _raw_blocks(fh: io.BufferedIOBase) -> Iterator[bytes]:
    """The stream in chunks of whole lines (the last one may lack its newline)."""
    read = getattr(fh, "read1", fh.read)  # read1: what is there, so a pipe's lines come without waiting
    rest = b""
    while True:
        data = read(_BLOCK)
        if not data:
            if rest:
                yield rest
            return
        if rest:
            data = rest + data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield data[:cut]


def _decode_block(block: bytes, path: str, first_lineno: int, errors: str) -> list[str]:
    """The block's lines, decoded, without their line ends; invalid UTF-8 names its line."""
    try:
        text = block.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        start = block.rfind(b"\n", 0, exc.start) + 1
        end = block.find(b"\n", exc.start)
        lineno = first_lineno + block.count(b"\n", 0, start)
        _decode(block[start:len(block) if end < 0 else end + 1], path, lineno, errors)  # raises, naming the line
        raise  # not reached: the line alone fails as the block did
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


def iter_line_blocks(
    sources: Iterable[str | os.PathLike],
    *,
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
) -> Iterator[list[str]]:
    """`iter_lines` in lists of consecutive lines (about 256 KiB of text each): the fast way through a large corpus."""
    for _, lines in _file_blocks(sources, text_field, errors, max_lines):
        yield lines


def _file_blocks(
    sources: Iterable[str | os.PathLike], text_field: str, errors: str, max_lines: int | None
) -> Iterator[tuple[str, list[str]]]:
    """(path, lines) blocks of every source in order; a .jsonl block holds one text per record."""
    if errors not in ("strict", "replace"):
        raise CorpusError(f"errors must be 'strict' or 'replace', got {errors!r}")
    count = 0
    for path in resolve_paths(sources):
        is_jsonl = _is_jsonl(path)
        fh = _open_binary(path)
        lineno = 1  # of the block's first line
        try:
            for block in _raw_blocks(fh):
                lines = _decode_block(block, path, lineno, errors)
                if is_jsonl:
                    lines = [_json_text(line, path, lineno + k, text_field) for k, line in enumerate(lines)
                             if line.strip()]
                lineno += block.count(b"\n")
                if max_lines is not None and count + len(lines) >= max_lines:
                    yield path, lines[: max_lines - count]
                    return
                count += len(lines)
                yield path, lines
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CorpusError(f"{path}: read failed ({exc})") from exc
        finally:
            if path != "-":
                fh.close()


def _is_jsonl(path: str) -> bool:
    return path.endswith((".jsonl", ".jsonl.gz"))


def _json_text(line: str, path: str, lineno: int, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise CorpusError(f"{path}, line {lineno}: no string field {text_field!r}; "
                          "pass --text-field with the field that holds the text")
    return record[text_field]


def iter_lines(
    sources: Iterable[str | os.PathLike],
    *,
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
) -> Iterator[str]:
    """Lines of text (without the newline), streamed from every source in order.

    For .jsonl files each record's `text_field` is one line (blank lines are
    skipped). Invalid UTF-8 raises CorpusError naming the file and line unless
    errors="replace".
    """
    for lines in iter_line_blocks(sources, text_field=text_field, errors=errors, max_lines=max_lines):
        yield from lines


SPLITS = ("blank", "line", "sentence")
# A sentence ends at . ! ? or … (closing quotes and brackets may follow) before whitespace and a capital letter,
# a digit or an opening quote: "Dr. Smith" splits too, a rare and harmless cut for training text.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])([\"'\u201d\u2019\u00bb)\]]*)\s+(?=[\"'\u201c\u2018\u00ab(\[]?[^\W_a-z\u0430-\u044f])")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (stripped, non-blank), cut after sentence-final punctuation."""
    pieces = _SENTENCE_END.split(text)
    # split() returns text, closing-quote group, text, ...: glue each group back to the sentence it ends
    out = [pieces[0] + (pieces[1] if len(pieces) > 1 else "")]
    for i in range(2, len(pieces), 2):
        out.append(pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else ""))
    return [p.strip() for p in out if p.strip()]


def iter_documents(
    sources: Iterable[str | os.PathLike],
    *,
    split: str = "blank",
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
) -> Iterator[str]:
    """Documents: runs of non-blank lines joined by newlines (split="blank"), single lines (split="line"), or the
    sentences of each line (split="sentence": the size of what sentence-similarity tasks score).

    A .jsonl record is always one document, whatever its text holds (blank
    lines included), and no document spans two files.
    """
    if split not in SPLITS:
        raise CorpusError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "sentence":
        for doc in iter_documents(sources, split="line", text_field=text_field, errors=errors, max_lines=max_lines):
            yield from split_sentences(doc)
        return
    buf: list[str] = []
    current = None
    for path, lines in _file_blocks(sources, text_field, errors, max_lines):
        if path != current:
            if buf:
                yield "\n".join(buf)
                buf = []
            current = path
        if split == "line" or _is_jsonl(path):
            yield from (line for line in lines if line.strip())
            continue
        for line in lines:
            if line.strip():
                buf.append(line)
            elif buf:
                yield "\n".join(buf)
                buf = []
    if buf:
        yield "\n".join(buf)


def require_text(lines: Iterable[str], what: str) -> Iterator[str]:
    """Pass lines through; raise CorpusError at the end if none held any text."""
    seen = False
    for line in lines:
        if not seen and line.strip():
            seen = True
        yield line
    if not seen:
        raise CorpusError(f"{what}: the corpus is empty (no line holds any text)")
