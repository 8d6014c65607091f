// Split every token of a source vocabulary at once into a CSR table.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splitter.hpp"

namespace vs {

struct SplitTable {
  std::vector<int64_t> offsets;  // size V_source + 1
  std::vector<int32_t> ids;      // size offsets.back()
};

// `forced[i]` >= 0 maps source id i straight to that target id (special
// tokens by role, unused slots to UNK); -1 splits its surface. A surface that
// cannot be split becomes the target's unknown token.
SplitTable build_split_table(const Splitter& target, const std::vector<std::string>& source_vocab,
                             const SchemeSpec& source_spec, const std::vector<int32_t>& forced);

}  // namespace vs
