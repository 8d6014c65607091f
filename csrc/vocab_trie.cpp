#include "vocab_trie.hpp"

#include <algorithm>

namespace vs {

VocabTrie::VocabTrie() : nodes_(1) {}

int32_t VocabTrie::child(int32_t node, uint8_t b) const {
  const auto& nx = nodes_[node].next;
  // Most nodes have few children: a linear scan beats binary search there.
  for (const auto& [byte, idx] : nx) {
    if (byte == b) return idx;
    if (byte > b) break;
  }
  return -1;
}

void VocabTrie::insert(std::string_view key, int32_t id) {
  int32_t node = 0;
  for (const char ch : key) {
    const auto b = static_cast<uint8_t>(ch);
    int32_t nxt = child(node, b);
    if (nxt < 0) {
      nxt = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& vec = nodes_[node].next;
      auto it = std::lower_bound(vec.begin(), vec.end(), b,
                                 [](const std::pair<uint8_t, int32_t>& p, uint8_t v) { return p.first < v; });
      vec.insert(it, {b, nxt});
    }
    node = nxt;
  }
  if (nodes_[node].id < 0) {
    nodes_[node].id = id;
    ++count_;
  }
}

std::size_t VocabTrie::longest_prefix(std::string_view s, std::size_t pos, const std::vector<char>& unit_end,
                                      int32_t& id) const {
  int32_t node = 0;
  std::size_t best = 0;
  id = -1;
  for (std::size_t i = pos; i < s.size(); ++i) {
    node = child(node, static_cast<uint8_t>(s[i]));
    if (node < 0) break;
    if (nodes_[node].id >= 0 && unit_end[i]) {
      best = i + 1 - pos;
      id = nodes_[node].id;
    }
  }
  return best;
}

}  // namespace vs
