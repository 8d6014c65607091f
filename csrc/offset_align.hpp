// Two independent tokenizations of one text -> their common chunks.
#pragma once
#include <cstdint>
#include <vector>

namespace vs {

// Token i of a side ends at character end[i] (token ends are enough: both
// sides cover the same text in order); special tokens have no text and align
// one to one, in order. Returns, per side, the exclusive
// token index at which each chunk ends; both vectors have one entry per chunk.
// A chunk's boundaries are token boundaries on both sides, and no finer
// segmentation has that property (the coarsest common refinement). Throws
// std::invalid_argument when the sides have different numbers of specials.
void offset_chunks(const int64_t* a_end, const uint8_t* a_special, int64_t na, const int64_t* b_end, const uint8_t* b_special, int64_t nb,
                   std::vector<int32_t>& a_ends, std::vector<int32_t>& b_ends);

}  // namespace vs
