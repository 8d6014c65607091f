// Batch expansion: teacher ids -> split ids, spans and the CSR span matrix.
#pragma once
#include <cstdint>
#include <vector>

namespace vs {

// Caller-owned output buffers, each at least as large as measure() asks.
struct SpanOutputs {
  int32_t* student_ids;   // B*Ls
  uint8_t* student_mask;  // B*Ls
  int32_t* segment_ids;   // B*Ls
  int32_t* span_start;    // B*Lt
  int32_t* span_end;      // B*Lt
  uint8_t* teacher_keep;  // B*Lt
  int32_t* indptr;        // B*Lt + 1
  int32_t* indices;       // nnz
  float* values;          // nnz
};

struct SpanSizes {
  int64_t ls = 0;   // padded student length
  int64_t nnz = 0;  // student positions that belong to a kept span
};

class SpanAligner {
 public:
  // offsets[V+1] / ids[nnz]: the split table. Validated here, so that a
  // corrupt table read from disk is rejected before any lookup.
  SpanAligner(std::vector<int64_t> offsets, std::vector<int32_t> ids, int32_t pad_id, int64_t target_vocab_size);

  int64_t source_vocab_size() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  const std::vector<int32_t>& ids() const { return ids_; }
  int32_t pad_id() const { return pad_id_; }

  // Sizes of the expansion of ids[B*Lt] with row lengths `lengths[B]`.
  // Throws std::out_of_range naming the row and position of a bad id.
  template <class Id>
  SpanSizes measure(const Id* ids, int64_t b, int64_t lt, const int64_t* lengths, int64_t max_length) const;

  // Writes the expansion; `sizes` must come from measure() on the same input.
  template <class Id>
  void fill(const Id* ids, int64_t b, int64_t lt, const int64_t* lengths, int64_t max_length, bool mean,
            SpanSizes sizes, const SpanOutputs& out) const;

 private:
  // One 16-byte entry per source id holding up to kInline pieces and the
  // count: fill() copies the whole entry with one 16-byte store and advances
  // by the count, so splits of up to kInline pieces (nearly all of them) need
  // neither a second lookup nor a loop. The lane after the last piece holds
  // garbage that the next store or the padding overwrites.
  static constexpr int32_t kInline = 3;
  struct alignas(16) Entry {
    int32_t piece[kInline];  // the first pieces (unused lanes: 0)
    int32_t len;             // number of pieces (all of them start at offsets_[id])
  };
  std::vector<int64_t> offsets_;
  std::vector<int32_t> ids_;
  std::vector<Entry> entries_;
  int32_t pad_id_;
};

// Row lengths from an attention mask that must be 1...1 0...0 per row.
template <class M>
void mask_lengths(const M* mask, int64_t b, int64_t lt, int64_t* lengths);

}  // namespace vs
