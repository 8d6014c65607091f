#include "splitter.hpp"

#include <stdexcept>
#include <unordered_set>

#include "utf8.hpp"

namespace vs {

Splitter::Splitter(const std::vector<std::string>& vocab, SchemeSpec spec, int32_t unk_id,
                   const std::vector<int32_t>& special_ids)
    : spec_(std::move(spec)), byte_ids_(256, -1), unk_id_(unk_id), vocab_size_(vocab.size()) {
  if (unk_id >= static_cast<int32_t>(vocab.size()))
    throw std::invalid_argument("unk_id " + std::to_string(unk_id) + " is outside the vocabulary of " +
                                std::to_string(vocab.size()) + " tokens");
  std::unordered_set<int32_t> special(special_ids.begin(), special_ids.end());
  if (unk_id >= 0) special.insert(unk_id);
  for (std::size_t id = 0; id < vocab.size(); ++id) {
    const auto& tok = vocab[id];
    const auto i32 = static_cast<int32_t>(id);
    if (tok.empty() || special.count(i32)) continue;
    const int b = byte_fallback_value(tok);
    if (b >= 0) {
      if (byte_ids_[b] < 0) byte_ids_[b] = i32;
      byte_fallback_ = true;
      continue;
    }
    const Surface s = parse_token(tok, spec_);
    if (!s.valid) continue;
    if (s.word_start) {
      // A bare word marker (metaspace "▁", byte-level "Ġ") is the empty initial key.
      initial_.insert(s.text, i32);
    } else if (!s.text.empty()) {
      continuation_.insert(s.text, i32);
    }
  }
}

bool Splitter::split(std::string_view surface, bool word_start, std::vector<int32_t>& out) const {
  const std::size_t n = surface.size();
  const std::size_t mark = out.size();
  // Byte-level vocabularies spell every byte as one symbol, so any byte is a
  // unit boundary there; elsewhere pieces end on whole code points.
  std::vector<char> unit_end(n, spec_.scheme == Scheme::ByteLevel ? 1 : 0);
  if (spec_.scheme != Scheme::ByteLevel) {
    for (std::size_t i = 0; i < n;) {
      const std::size_t len = code_point_len(surface, i);
      i += len;
      unit_end[i - 1] = 1;
    }
  }
  std::size_t pos = 0;
  bool first = true;
  while (pos < n || first) {
    int32_t id = -1;
    std::size_t len = 0;
    if (first && word_start) {
      len = initial_.longest_prefix(surface, pos, unit_end, id);
      if (len == 0) id = initial_.empty_id();  // bare marker, then continue
    } else if (pos < n) {
      len = continuation_.longest_prefix(surface, pos, unit_end, id);
    }
    if (first && n == 0 && id < 0) break;  // nothing to emit for an empty surface
    first = false;
    if (id >= 0) {
      out.push_back(id);
      pos += len;
      continue;
    }
    if (!byte_fallback_) break;
    // Byte fallback covers one unit: every byte of it must have a token.
    std::size_t unit = (spec_.scheme == Scheme::ByteLevel) ? 1 : code_point_len(surface, pos);
    bool ok = true;
    for (std::size_t k = 0; k < unit; ++k) {
      const int32_t b = byte_ids_[static_cast<uint8_t>(surface[pos + k])];
      if (b < 0) {
        ok = false;
        break;
      }
      out.push_back(b);
    }
    if (!ok) break;
    pos += unit;
  }
  if (pos < n || out.size() == mark) {
    out.resize(mark);
    return false;
  }
  return true;
}

void Splitter::split_or_unk(std::string_view surface, bool word_start, std::vector<int32_t>& out) const {
  if (split(surface, word_start, out)) return;
  if (unk_id_ < 0)
    throw std::invalid_argument("the student vocabulary has no unknown token and cannot represent the surface '" +
                                std::string(surface) + "'");
  out.push_back(unk_id_);
}

}  // namespace vs
