#include "offset_align.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace vs {

namespace {

// Merges the plain tokens a[i0, i1) and b[j0, j1) into chunks.
void merge_segment(const int64_t* a_end, int64_t i0, int64_t i1, const int64_t* b_end, int64_t j0, int64_t j1,
                   std::vector<int32_t>& a_ends, std::vector<int32_t>& b_ends) {
  if (i0 == i1 && j0 == j1) return;
  const std::size_t first_chunk = a_ends.size();
  int64_t i = i0, j = j0;
  while (i < i1 && j < j1) {
    int64_t ea = a_end[i], eb = b_end[j];
    while (ea != eb) {
      if (ea < eb) {
        if (i + 1 >= i1) break;
        ea = std::max(ea, a_end[++i]);
      } else {
        if (j + 1 >= j1) break;
        eb = std::max(eb, b_end[++j]);
      }
    }
    if (ea != eb) {  // one side ran out: the rest is one chunk
      i = i1 - 1;
      j = j1 - 1;
    }
    ++i;
    ++j;
    a_ends.push_back(static_cast<int32_t>(i));
    b_ends.push_back(static_cast<int32_t>(j));
  }
  if (i < i1 || j < j1) {
    // Text one side tokenized and the other dropped: it joins the last chunk,
    // or forms a chunk with an empty side when the segment has none.
    if (a_ends.size() > first_chunk) {
      a_ends.back() = static_cast<int32_t>(i1);
      b_ends.back() = static_cast<int32_t>(j1);
    } else {
      a_ends.push_back(static_cast<int32_t>(i1));
      b_ends.push_back(static_cast<int32_t>(j1));
    }
  }
}

}  // namespace

void offset_chunks(const int64_t* a_end, const uint8_t* a_special, int64_t na, const int64_t* b_end, const uint8_t* b_special, int64_t nb,
                   std::vector<int32_t>& a_ends, std::vector<int32_t>& b_ends) {
  a_ends.clear();
  b_ends.clear();
  const auto count = [](const uint8_t* sp, int64_t n) { return std::count_if(sp, sp + n, [](uint8_t x) { return x != 0; }); };
  const auto sa = count(a_special, na), sb = count(b_special, nb);
  if (sa != sb)
    throw std::invalid_argument("the tokenizations have " + std::to_string(sa) + " and " + std::to_string(sb) +
                                " special tokens: they must have the same number to align one to one");
  int64_t i = 0, j = 0;
  while (i < na || j < nb) {
    int64_t i1 = i, j1 = j;
    while (i1 < na && !a_special[i1]) ++i1;
    while (j1 < nb && !b_special[j1]) ++j1;
    merge_segment(a_end, i, i1, b_end, j, j1, a_ends, b_ends);
    i = i1;
    j = j1;
    if (i < na && j < nb) {  // the next special on both sides
      ++i;
      ++j;
      a_ends.push_back(static_cast<int32_t>(i));
      b_ends.push_back(static_cast<int32_t>(j));
    }
  }
}

}  // namespace vs
