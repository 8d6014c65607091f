#include "span_align.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace vs {

namespace {
// 1/n without a division for the usual short spans.
struct Reciprocals {
  float r[64];
  Reciprocals() {
    r[0] = 0.0f;
    for (int i = 1; i < 64; ++i) r[i] = 1.0f / static_cast<float>(i);
  }
};
const Reciprocals kRecip;
inline float recip(int32_t n) { return n < 64 ? kRecip.r[n] : 1.0f / static_cast<float>(n); }
}  // namespace

SpanAligner::SpanAligner(std::vector<int64_t> offsets, std::vector<int32_t> ids, int32_t pad_id,
                         int64_t target_vocab_size)
    : offsets_(std::move(offsets)), ids_(std::move(ids)), pad_id_(pad_id) {
  if (offsets_.size() < 2 || offsets_[0] != 0)
    throw std::invalid_argument("split table offsets must start with 0 and cover at least one source token");
  if (offsets_.back() != static_cast<int64_t>(ids_.size()))
    throw std::invalid_argument("split table offsets end at " + std::to_string(offsets_.back()) + " but there are " +
                                std::to_string(ids_.size()) + " ids");
  for (std::size_t i = 1; i < offsets_.size(); ++i) {
    if (offsets_[i] <= offsets_[i - 1])
      throw std::invalid_argument("split table entry " + std::to_string(i - 1) +
                                  " is empty or offsets decrease: every source token needs at least one piece");
  }
  for (std::size_t k = 0; k < ids_.size(); ++k) {
    if (ids_[k] < 0 || ids_[k] >= target_vocab_size)
      throw std::invalid_argument("split table id " + std::to_string(ids_[k]) + " at " + std::to_string(k) +
                                  " is outside the target vocabulary of " + std::to_string(target_vocab_size));
  }
  if (pad_id < 0 || pad_id >= target_vocab_size)
    throw std::invalid_argument("pad id " + std::to_string(pad_id) + " is outside the target vocabulary of " +
                                std::to_string(target_vocab_size));
  if (ids_.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument("split table too large for int32 offsets");
  entries_.resize(offsets_.size() - 1);
  for (std::size_t i = 0; i + 1 < offsets_.size(); ++i) {
    const auto len = static_cast<int32_t>(offsets_[i + 1] - offsets_[i]);
    Entry e{};
    for (int32_t k = 0; k < kInline && k < len; ++k) e.piece[k] = ids_[offsets_[i] + k];
    e.len = len;
    entries_[i] = e;
  }
}

template <class Id>
SpanSizes SpanAligner::measure(const Id* ids, int64_t b, int64_t lt, const int64_t* lengths,
                               int64_t max_length) const {
  const int64_t v = source_vocab_size();
  const Entry* __restrict ent = entries_.data();
  SpanSizes s;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t len = lengths[r];
    if (len < 0 || len > lt)
      throw std::out_of_range("row " + std::to_string(r) + " has length " + std::to_string(len) +
                              ", outside [0, " + std::to_string(lt) + "]");
    const Id* row = ids + r * lt;
    // Validate and size in one branch-free pass (a bad id is clamped for the
    // lookup and reported afterwards); find the culprit only on failure.
    bool bad = false;
    int64_t cur = 0;
    const uint64_t top = static_cast<uint64_t>(v - 1);
    if (max_length < 0) {
      for (int64_t t = 0; t < len; ++t) {
        const auto id = static_cast<uint64_t>(static_cast<int64_t>(row[t]));
        bad |= id > top;
        cur += ent[id > top ? top : id].len;
      }
    } else {
      for (int64_t t = 0; t < len; ++t) {
        const auto id = static_cast<uint64_t>(static_cast<int64_t>(row[t]));
        bad |= id > top;
      }
      if (!bad) {
        for (int64_t t = 0; t < len; ++t) {
          const int64_t n = ent[static_cast<int64_t>(row[t])].len;
          if (cur + n > max_length) break;
          cur += n;
        }
      }
    }
    if (bad) {
      for (int64_t t = 0; t < len; ++t) {
        const int64_t id = static_cast<int64_t>(row[t]);
        if (id < 0 || id >= v)
          throw std::out_of_range("teacher id " + std::to_string(id) + " at row " + std::to_string(r) +
                                  ", position " + std::to_string(t) + " is outside [0, " + std::to_string(v) + ")");
      }
    }
    if (cur > s.ls) s.ls = cur;
    s.nnz += cur;
  }
  if (b * s.ls > std::numeric_limits<int32_t>::max() || b * lt >= std::numeric_limits<int32_t>::max())
    throw std::length_error("batch too large for int32 span indices: split it");
  return s;
}

template <class Id>
void SpanAligner::fill(const Id* ids, int64_t b, int64_t lt, const int64_t* lengths, int64_t max_length, bool mean,
                       SpanSizes sizes, const SpanOutputs& o) const {
  // Local restrict pointers: the uint8_t stores could otherwise alias the
  // pointers in `o` and force a reload of every one after each store.
  const Entry* __restrict ent = entries_.data();
  const int32_t* __restrict tab = ids_.data();
  int32_t* __restrict student_ids = o.student_ids;
  uint8_t* __restrict student_mask = o.student_mask;
  int32_t* __restrict segment_ids = o.segment_ids;
  int32_t* __restrict span_start = o.span_start;
  int32_t* __restrict span_end = o.span_end;
  uint8_t* __restrict keep = o.teacher_keep;
  int32_t* __restrict indptr = o.indptr;
  int32_t* __restrict indices = o.indices;
  float* __restrict values = o.values;
  const int64_t ls = sizes.ls;
  const int64_t limit = max_length >= 0 ? max_length : std::numeric_limits<int64_t>::max();
  // The 4-lane stores below write up to 4 - n elements past a split of n
  // pieces; they land on positions written later, except at the very end of
  // the buffers, where the exact path takes over.
  const int64_t wide_student_end = b * ls - 4;
  const int64_t wide_value_end = sizes.nnz - 4;
  int32_t cursor = 0;
  for (int64_t r = 0; r < b; ++r) {
    const Id* row = ids + r * lt;
    const int64_t len = lengths[r];
    int32_t* sid = student_ids + r * ls;
    uint8_t* smask = student_mask + r * ls;
    int32_t* seg = segment_ids + r * ls;
    const int64_t base = r * lt;
    const int32_t row_base = static_cast<int32_t>(r * ls);
    const int32_t row_cursor = cursor;
    int32_t s = 0;
    int64_t t = 0;
    for (; t < len; ++t) {
      const int64_t id = static_cast<int64_t>(row[t]);
      const Entry& e = ent[id];
      const int32_t n = e.len;
      if (s + n > limit) break;
      span_start[base + t] = s;
      const float w = mean ? recip(n) : 1.0f;
      const int32_t tt = static_cast<int32_t>(t);
      if (n == 1) {  // most splits: three plain stores
        sid[s] = e.piece[0];
        seg[s] = tt;
        values[cursor] = w;
      } else if (n <= kInline && row_base + s <= wide_student_end && cursor <= wide_value_end) {
        const int32_t segs[4] = {tt, tt, tt, tt};
        const float ws[4] = {w, w, w, w};
        std::memcpy(sid + s, &e, 16);
        std::memcpy(seg + s, segs, 16);
        std::memcpy(values + cursor, ws, 16);
      } else {
        const int32_t* src = tab + offsets_[id];
        for (int32_t k = 0; k < n; ++k) {
          sid[s + k] = src[k];
          seg[s + k] = tt;
          values[cursor + k] = w;
        }
      }
      cursor += n;
      s += n;
    }
    // Kept spans tile the row's first s positions in order, and the kept
    // teacher positions are a prefix: the CSR columns, the masks and the row
    // pointers are plain fills, done here rather than token by token.
    const int64_t kept = t;
    // Kept spans are contiguous: each ends where the next starts.
    if (kept > 0) {
      std::memcpy(span_end + base, span_start + base + 1, static_cast<std::size_t>(kept - 1) * sizeof(int32_t));
      span_end[base + kept - 1] = s;
    }
    int32_t* col = indices + row_cursor;
    for (int32_t k = 0; k < s; ++k) col[k] = row_base + k;
    std::memset(smask, 1, static_cast<std::size_t>(s));
    std::memset(keep + base, 1, static_cast<std::size_t>(kept));
    std::memset(keep + base + kept, 0, static_cast<std::size_t>(lt - kept));
    for (; t < lt; ++t) {  // dropped or padding positions: empty spans
      span_start[base + t] = s;
      span_end[base + t] = s;
    }
    for (int64_t k = 0; k < lt; ++k) indptr[base + k] = row_cursor + span_start[base + k];
    for (int64_t k = s; k < ls; ++k) {
      sid[k] = pad_id_;
      seg[k] = -1;
    }
    std::memset(smask + s, 0, static_cast<std::size_t>(ls - s));
  }
  indptr[b * lt] = cursor;
}

template <class M>
void mask_lengths(const M* mask, int64_t b, int64_t lt, int64_t* lengths) {
  for (int64_t r = 0; r < b; ++r) {
    const M* row = mask + r * lt;
    int64_t len = 0;
    while (len < lt && row[len] != 0) ++len;
    for (int64_t t = len; t < lt; ++t) {
      if (row[t] != 0)
        throw std::out_of_range("attention_mask row " + std::to_string(r) + " has a 1 at position " +
                                std::to_string(t) + " after padding began at " + std::to_string(len) +
                                ": rows must be 1...1 0...0 (right padding)");
    }
    lengths[r] = len;
  }
}

#define VS_INSTANTIATE_ID(T)                                                                                      \
  template SpanSizes SpanAligner::measure<T>(const T*, int64_t, int64_t, const int64_t*, int64_t) const;       \
  template void SpanAligner::fill<T>(const T*, int64_t, int64_t, const int64_t*, int64_t, bool, SpanSizes,      \
                                     const SpanOutputs&) const;
VS_INSTANTIATE_ID(int32_t)
VS_INSTANTIATE_ID(int64_t)
#undef VS_INSTANTIATE_ID

template void mask_lengths<bool>(const bool*, int64_t, int64_t, int64_t*);
template void mask_lengths<int8_t>(const int8_t*, int64_t, int64_t, int64_t*);
template void mask_lengths<uint8_t>(const uint8_t*, int64_t, int64_t, int64_t*);
template void mask_lengths<int32_t>(const int32_t*, int64_t, int64_t, int64_t*);
template void mask_lengths<int64_t>(const int64_t*, int64_t, int64_t, int64_t*);

}  // namespace vs
