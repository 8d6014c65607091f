// UTF-8 helpers shared by the splitter and the token parser.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vs {

// Length in bytes of the code point starting at s[i]. A byte that cannot start
// a valid sequence, or a sequence cut short, counts as one unit so that
// malformed input (byte-fallback surfaces) still advances.
inline std::size_t code_point_len(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 1;
  if (c >= 0xF0 && c < 0xF8) n = 4;
  else if (c >= 0xE0) n = (c < 0xF0) ? 3 : 1;
  else if (c >= 0xC0) n = 2;
  if (i + n > s.size()) return 1;
  for (std::size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  }
  return n;
}

// Decodes one code point; returns false on malformed input.
bool decode_code_point(std::string_view s, std::size_t& i, uint32_t& cp);
void append_code_point(std::string& out, uint32_t cp);

}  // namespace vs
