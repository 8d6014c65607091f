#include "span_align.hpp"

#include <limits>
#include <stdexcept>
#include <string>

namespace vs {

SpanAligner::SpanAligner(std::vector<int64_t> offsets, std::vector<int32_t> ids, int32_t pad_id,
                         int64_t target_vocab_size)
    : offsets_(std::move(offsets)), ids_(std::move(ids)), pad_id_(pad_id) {
  if (offsets_.empty() || offsets_[0] != 0)
    throw std::invalid_argument("split table offsets must start with 0");
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
}

template <class Id>
SpanSizes SpanAligner::measure(const Id* ids, int64_t b, int64_t lt, const int64_t* lengths,
                               int64_t max_length) const {
  const int64_t v = source_vocab_size();
  const int64_t* off = offsets_.data();
  SpanSizes s;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t len = lengths[r];
    if (len < 0 || len > lt)
      throw std::out_of_range("row " + std::to_string(r) + " has length " + std::to_string(len) +
                              ", outside [0, " + std::to_string(lt) + "]");
    const Id* row = ids + r * lt;
    int64_t cur = 0;
    bool stopped = false;
    for (int64_t t = 0; t < len; ++t) {
      const int64_t id = static_cast<int64_t>(row[t]);
      if (id < 0 || id >= v)
        throw std::out_of_range("teacher id " + std::to_string(id) + " at row " + std::to_string(r) + ", position " +
                                std::to_string(t) + " is outside [0, " + std::to_string(v) + ")");
      if (stopped) continue;  // keep validating the rest of the row
      const int64_t n = off[id + 1] - off[id];
      if (max_length >= 0 && cur + n > max_length) {
        stopped = true;
        continue;
      }
      cur += n;
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
  const int64_t* off = offsets_.data();
  const int32_t* tab = ids_.data();
  const int64_t ls = sizes.ls;
  int32_t cursor = 0;
  for (int64_t r = 0; r < b; ++r) {
    const Id* row = ids + r * lt;
    const int64_t len = lengths[r];
    int32_t* sid = o.student_ids + r * ls;
    uint8_t* smask = o.student_mask + r * ls;
    int32_t* seg = o.segment_ids + r * ls;
    int32_t s = 0;
    bool stopped = false;
    const int32_t row_base = static_cast<int32_t>(r * ls);
    for (int64_t t = 0; t < lt; ++t) {
      const int64_t ft = r * lt + t;
      o.indptr[ft] = cursor;
      int64_t beg = 0, n = 0;
      if (t < len && !stopped) {
        const int64_t id = static_cast<int64_t>(row[t]);
        beg = off[id];
        n = off[id + 1] - beg;
        if (max_length >= 0 && s + n > max_length) stopped = true;
      }
      if (t >= len || stopped) {
        o.span_start[ft] = s;
        o.span_end[ft] = s;
        o.teacher_keep[ft] = 0;
        continue;
      }
      o.span_start[ft] = s;
      o.span_end[ft] = static_cast<int32_t>(s + n);
      o.teacher_keep[ft] = 1;
      const float w = mean ? 1.0f / static_cast<float>(n) : 1.0f;
      for (int64_t k = 0; k < n; ++k) {
        sid[s] = tab[beg + k];
        smask[s] = 1;
        seg[s] = static_cast<int32_t>(t);
        o.indices[cursor] = row_base + s;
        o.values[cursor] = w;
        ++cursor;
        ++s;
      }
    }
    for (int64_t k = s; k < ls; ++k) {
      sid[k] = pad_id_;
      smask[k] = 0;
      seg[k] = -1;
    }
  }
  o.indptr[b * lt] = cursor;
  (void)sizes.nnz;
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
