"""Read text: .txt, .gz, .jsonl (a text field), folders, globs and stdin, streamed."""

from __future__ import annotations

import glob
import gzip
import io
import json
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


def iter_lines(
    sources: Iterable[str | os.PathLike],
    *,
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
) -> Iterator[str]:
    """Lines of text (without the newline), streamed from every source in order.

    For .jsonl files each record's `text_field` is one line. Invalid UTF-8
    raises CorpusError naming the file and line unless errors="replace".
    """
    if errors not in ("strict", "replace"):
        raise CorpusError(f"errors must be 'strict' or 'replace', got {errors!r}")
    count = 0
    for path in resolve_paths(sources):
        is_jsonl = path.endswith((".jsonl", ".jsonl.gz"))
        fh = _open_binary(path)
        try:
            for lineno, raw in enumerate(fh, start=1):
                line = _decode(raw, path, lineno, errors).rstrip("\r\n")
                if is_jsonl:
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CorpusError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
                    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                        raise CorpusError(f"{path}, line {lineno}: no string field {text_field!r}; "
                                          "pass --text-field with the field that holds the text")
                    line = record[text_field]
                yield line
                count += 1
                if max_lines is not None and count >= max_lines:
                    return
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CorpusError(f"{path}: read failed ({exc})") from exc
        finally:
            if path != "-":
                fh.close()


def iter_documents(
    sources: Iterable[str | os.PathLike],
    *,
    split: str = "blank",
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
) -> Iterator[str]:
    """Documents: runs of non-blank lines joined by newlines (split="blank"), or single lines (split="line").

    A .jsonl record is always one document.
    """
    if split not in ("blank", "line"):
        raise CorpusError(f"split must be 'blank' or 'line', got {split!r}")
    buf: list[str] = []
    for line in iter_lines(sources, text_field=text_field, errors=errors, max_lines=max_lines):
        if split == "line":
            if line.strip():
                yield line
            continue
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
