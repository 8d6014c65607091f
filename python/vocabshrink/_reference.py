"""Pure-Python reference of the C++ core, written independently, for tests and benchmarks.

Slow on purpose: dictionaries and slices instead of tries and buffers, so
that a disagreement with the core points at a bug in one of them.
"""

from __future__ import annotations

import numpy as np

METASPACE = "\u2581"


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def parse_token(token: str, scheme: str, prefix: str = "##", replacement: str = METASPACE) -> tuple[bytes, bool, bool]:
    """(surface bytes, starts a word, readable)."""
    if scheme == "wordpiece":
        if prefix and token.startswith(prefix) and len(token) > len(prefix):
            return token[len(prefix):].encode(), False, True
        return token.encode(), True, True
    if scheme == "metaspace":
        if replacement and token.startswith(replacement):
            return token[len(replacement):].encode(), True, True
        return token.encode(), False, True
    if scheme == "bytelevel":
        if any(c not in CHAR_TO_BYTE for c in token):
            return b"", False, False
        raw = bytes(CHAR_TO_BYTE[c] for c in token)
        if raw.startswith(b" "):
            return raw[1:], True, True
        return raw, False, True
    raise ValueError(f"unknown scheme {scheme!r}")


def _unit_ends(surface: bytes, bytelevel: bool) -> list[int]:
    """Positions after each unit: bytes for byte-level, else code points (malformed bytes count alone)."""
    if bytelevel:
        return list(range(1, len(surface) + 1))
    ends, i = [], 0
    while i < len(surface):
        c = surface[i]
        n = 4 if 0xF0 <= c < 0xF8 else 3 if 0xE0 <= c < 0xF0 else 2 if 0xC0 <= c < 0xE0 else 1
        if i + n > len(surface) or any((surface[i + k] & 0xC0) != 0x80 for k in range(1, n)):
            n = 1
        i += n
        ends.append(i)
    return ends


def _byte_value(token: str) -> int | None:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return int(token[3:5], 16)
        except ValueError:
            return None
    return None


class ReferenceSplitter:
    def __init__(self, vocab: list[str], scheme: str, prefix: str = "##", replacement: str = METASPACE,
                 unk_id: int = -1, special_ids: list[int] | tuple = ()) -> None:
        self.scheme, self.unk_id = scheme, unk_id
        skip = set(special_ids) | ({unk_id} if unk_id >= 0 else set())
        self.initial: dict[bytes, int] = {}
        self.cont: dict[bytes, int] = {}
        self.bytes: dict[int, int] = {}
        for i, tok in enumerate(vocab):
            if not tok or i in skip:
                continue
            bv = _byte_value(tok)
            if bv is not None:
                self.bytes.setdefault(bv, i)
                continue
            surface, start, ok = parse_token(tok, scheme, prefix, replacement)
            if not ok:
                continue
            if start:
                self.initial.setdefault(surface, i)
            elif surface:
                self.cont.setdefault(surface, i)

    def split(self, surface: bytes, word_start: bool) -> list[int] | None:
        ends = _unit_ends(surface, self.scheme == "bytelevel")
        out: list[int] = []
        pos, first = 0, True
        while pos < len(surface) or first:
            table = self.initial if (first and word_start) else self.cont
            found = None
            for e in sorted((e for e in ends if e > pos), reverse=True):
                if surface[pos:e] in table:
                    found = (table[surface[pos:e]], e)
                    break
            if found is None and first and word_start and b"" in self.initial:
                found = (self.initial[b""], pos)
            if first and not surface and found is None:
                break
            first = False
            if found is not None:
                out.append(found[0])
                pos = found[1]
                continue
            if not self.bytes:
                return None
            unit_end = min(e for e in ends if e > pos)
            chunk = surface[pos:unit_end]
            if any(b not in self.bytes for b in chunk):
                return None
            out.extend(self.bytes[b] for b in chunk)
            pos = unit_end
        return out or None

    def split_or_unk(self, surface: bytes, word_start: bool) -> list[int]:
        pieces = self.split(surface, word_start)
        if pieces is None:
            if self.unk_id < 0:
                raise ValueError("no unknown token")
            return [self.unk_id]
        return pieces


def build_split_table(target: ReferenceSplitter, source_vocab: list[str], scheme: str, prefix: str = "##",
                      replacement: str = METASPACE, forced=None) -> tuple[np.ndarray, np.ndarray]:
    forced = [-1] * len(source_vocab) if forced is None else list(forced)
    offsets, ids = [0], []
    for tok, f in zip(source_vocab, forced):
        if f >= 0:
            ids.append(int(f))
        else:
            surface, start, ok = parse_token(tok, scheme, prefix, replacement)
            if ok and tok:
                ids.extend(target.split_or_unk(surface, start))
            else:
                ids.append(target.unk_id)
        offsets.append(len(ids))
    return np.array(offsets, dtype=np.int64), np.array(ids, dtype=np.int32)


def align(offsets: np.ndarray, table_ids: np.ndarray, teacher_ids, lengths, max_length: int | None,
          pad_id: int, reduce: str = "mean") -> dict[str, np.ndarray]:
    """Span data as in DESIGN.md, with Python loops."""
    teacher_ids = np.asarray(teacher_ids)
    b, lt = teacher_ids.shape
    vocab = len(offsets) - 1
    rows = []
    for r in range(b):
        row_ids = [int(x) for x in teacher_ids[r, : int(lengths[r])]]
        for t, tid in enumerate(row_ids):
            if not 0 <= tid < vocab:
                raise ValueError(f"teacher id {tid} at row {r}, position {t}")
        pieces: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        for t, tid in enumerate(row_ids):
            split = table_ids[offsets[tid]: offsets[tid + 1]].tolist()
            if max_length is not None and len(pieces) + len(split) > max_length:
                break
            spans[t] = (len(pieces), len(pieces) + len(split))
            pieces += split
        rows.append((pieces, spans))
    ls = max((len(p) for p, _ in rows), default=0)
    out = {
        "student_ids": np.full((b, ls), pad_id, dtype=np.int32),
        "student_mask": np.zeros((b, ls), dtype=bool),
        "segment_ids": np.full((b, ls), -1, dtype=np.int32),
        "span_start": np.zeros((b, lt), dtype=np.int32),
        "span_end": np.zeros((b, lt), dtype=np.int32),
        "teacher_keep": np.zeros((b, lt), dtype=bool),
    }
    indptr, indices, values = [0], [], []
    for r, (pieces, spans) in enumerate(rows):
        out["student_ids"][r, : len(pieces)] = pieces
        out["student_mask"][r, : len(pieces)] = True
        for t in range(lt):
            s, e = spans.get(t, (len(pieces), len(pieces)))
            out["span_start"][r, t], out["span_end"][r, t] = s, e
            if t in spans:
                out["teacher_keep"][r, t] = True
                out["segment_ids"][r, s:e] = t
                indices += [r * ls + k for k in range(s, e)]
                values += [1.0 / (e - s) if reduce == "mean" else 1.0] * (e - s)
            indptr.append(len(indices))
    out["indptr"] = np.array(indptr, dtype=np.int32)
    out["indices"] = np.array(indices, dtype=np.int32)
    out["values"] = np.array(values, dtype=np.float32)
    return out


def offset_chunks(a_end, a_special, b_end, b_special) -> tuple[np.ndarray, np.ndarray]:
    """Coarsest common segmentation, found as the intersection of both sides' boundary sets."""
    a_end, b_end = [int(x) for x in a_end], [int(x) for x in b_end]
    a_special, b_special = [bool(x) for x in a_special], [bool(x) for x in b_special]
    if sum(a_special) != sum(b_special):
        raise ValueError("different numbers of special tokens")

    def segments(special: list[bool]) -> list[tuple[int, int]]:
        segs, start = [], 0
        for i, s in enumerate(special):
            if s:
                segs.append((start, i))
                start = i + 1
        segs.append((start, len(special)))
        return segs

    def boundaries(ends: list[int], lo: int, hi: int) -> dict[int, int]:
        """Character boundary -> first token index after which it is reached (running max of ends)."""
        found: dict[int, int] = {}
        m = None
        for i in range(lo, hi):
            m = ends[i] if m is None else max(m, ends[i])
            found.setdefault(m, i + 1)
        return found

    ra: list[int] = []
    rb: list[int] = []
    n_special = sum(a_special)
    for k, ((i0, i1), (j0, j1)) in enumerate(zip(segments(a_special), segments(b_special))):
        if i1 > i0 or j1 > j0:
            ab, bb = boundaries(a_end, i0, i1), boundaries(b_end, j0, j1)
            chunks = [(ab[c], bb[c]) for c in sorted(set(ab) & set(bb))]
            if not chunks:
                chunks = [(i1, j1)]
            elif chunks[-1][0] < i1 and chunks[-1][1] < j1:
                chunks.append((i1, j1))  # both sides go on past the last shared boundary
            else:
                chunks[-1] = (i1, j1)  # only one side does: its rest joins the last chunk
            for ca, cb in chunks:
                ra.append(ca)
                rb.append(cb)
        if k < n_special:
            ra.append(i1 + 1)
            rb.append(j1 + 1)
    return np.array(ra, dtype=np.int32), np.array(rb, dtype=np.int32)
