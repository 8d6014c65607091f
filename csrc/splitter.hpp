// Greedy longest-match-first split of one token surface into vocabulary pieces.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "token_scheme.hpp"
#include "vocab_trie.hpp"

namespace vs {

class Splitter {
 public:
  // `vocab[i]` is the string of id i ("" for an unused id); ids listed in
  // `special_ids` are never produced as pieces. `unk_id` < 0 means the
  // vocabulary has no unknown token.
  Splitter(const std::vector<std::string>& vocab, SchemeSpec spec, int32_t unk_id,
           const std::vector<int32_t>& special_ids);

  // Appends the pieces of (surface, word_start) to `out`. Returns false, and
  // appends nothing, when some position matches no piece and byte fallback
  // cannot cover it: the caller decides what UNK means.
  bool split(std::string_view surface, bool word_start, std::vector<int32_t>& out) const;

  // Like split, but an unmatched token becomes the unknown token; throws
  // std::invalid_argument when there is none.
  void split_or_unk(std::string_view surface, bool word_start, std::vector<int32_t>& out) const;

  int32_t unk_id() const { return unk_id_; }
  std::size_t vocab_size() const { return vocab_size_; }
  const SchemeSpec& spec() const { return spec_; }
  bool has_byte_fallback() const { return byte_fallback_; }

 private:
  SchemeSpec spec_;
  VocabTrie initial_;       // pieces that may start a word
  VocabTrie continuation_;  // pieces that continue one
  std::vector<int32_t> byte_ids_;  // byte -> id of <0xNN>, or -1
  bool byte_fallback_ = false;
  int32_t unk_id_;
  std::size_t vocab_size_;
};

}  // namespace vs
