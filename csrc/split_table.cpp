#include "split_table.hpp"

#include <stdexcept>

#include "token_scheme.hpp"

namespace vs {

SplitTable build_split_table(const Splitter& target, const std::vector<std::string>& source_vocab,
                             const SchemeSpec& source_spec, const std::vector<int32_t>& forced) {
  const std::size_t v = source_vocab.size();
  if (forced.size() != v)
    throw std::invalid_argument("forced has " + std::to_string(forced.size()) + " entries for a vocabulary of " +
                                std::to_string(v));
  const auto target_size = static_cast<int64_t>(target.vocab_size());
  SplitTable t;
  t.offsets.resize(v + 1);
  t.ids.reserve(v * 2);
  t.offsets[0] = 0;
  for (std::size_t i = 0; i < v; ++i) {
    const int32_t f = forced[i];
    if (f >= 0) {
      if (f >= target_size)
        throw std::invalid_argument("forced target id " + std::to_string(f) + " for source id " + std::to_string(i) +
                                    " is outside the target vocabulary of " + std::to_string(target_size));
      t.ids.push_back(f);
    } else {
      const Surface s = parse_token(source_vocab[i], source_spec);
      try {
        if (s.valid && !source_vocab[i].empty()) {
          target.split_or_unk(s.text, s.word_start, t.ids);
        } else if (target.unk_id() >= 0) {
          t.ids.push_back(target.unk_id());
        } else {
          throw std::invalid_argument("it has no surface and the target has no unknown token");
        }
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("cannot split source token id " + std::to_string(i) + ": " + e.what());
      }
    }
    t.offsets[i + 1] = static_cast<int64_t>(t.ids.size());
  }
  return t;
}

}  // namespace vs
