// A byte trie over piece surfaces for longest-match lookups.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace vs {

class VocabTrie {
 public:
  VocabTrie();
  // Later inserts of the same key keep the first id (lowest id wins, as the
  // vocabulary is inserted in id order).
  void insert(std::string_view key, int32_t id);
  // Id stored for the empty key, or -1.
  int32_t empty_id() const { return nodes_[0].id; }
  // Longest key that is a prefix of s[pos:] and ends on a unit boundary
  // (`unit_end[k]` true when a unit ends after byte k of s). Returns the
  // match length in bytes (0 when none) and sets id.
  std::size_t longest_prefix(std::string_view s, std::size_t pos, const std::vector<char>& unit_end,
                             int32_t& id) const;
  std::size_t size() const { return count_; }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t id = -1;
  };
  int32_t child(int32_t node, uint8_t b) const;
  std::vector<Node> nodes_;
  std::size_t count_ = 0;
};

}  // namespace vs
