#include "token_scheme.hpp"

#include <array>
#include <stdexcept>

#include "utf8.hpp"

namespace vs {

bool decode_code_point(std::string_view s, std::size_t& i, uint32_t& cp) {
  const std::size_t n = code_point_len(s, i);
  const auto c0 = static_cast<unsigned char>(s[i]);
  if (n == 1) {
    if (c0 >= 0x80) return false;
    cp = c0;
    i += 1;
    return true;
  }
  static constexpr unsigned char lead_mask[5] = {0, 0, 0x1F, 0x0F, 0x07};
  cp = c0 & lead_mask[n];
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return true;
}

void append_code_point(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

Scheme parse_scheme(std::string_view name) {
  if (name == "wordpiece") return Scheme::WordPiece;
  if (name == "metaspace") return Scheme::Metaspace;
  if (name == "bytelevel") return Scheme::ByteLevel;
  throw std::invalid_argument("unknown token scheme '" + std::string(name) +
                              "': expected wordpiece, metaspace or bytelevel");
}

namespace {

// The GPT-2 table: printable bytes map to themselves, the others to 256+k.
struct ByteTable {
  std::array<uint32_t, 256> to_cp{};
  ByteTable() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

}  // namespace

uint32_t byte_to_unicode(uint8_t b) { return byte_table().to_cp[b]; }

int unicode_to_byte(uint32_t cp) {
  if (cp < 256) {
    const bool printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE);
    return printable ? static_cast<int>(cp) : -1;
  }
  if (cp < 256 + 68) {
    const auto& t = byte_table();
    for (int b = 0; b < 256; ++b)
      if (t.to_cp[b] == cp) return b;
  }
  return -1;
}

int byte_fallback_value(std::string_view t) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

Surface parse_token(std::string_view token, const SchemeSpec& spec) {
  Surface s;
  switch (spec.scheme) {
    case Scheme::WordPiece: {
      const auto& p = spec.continuation_prefix;
      if (!p.empty() && token.size() > p.size() && token.substr(0, p.size()) == p) {
        s.text = std::string(token.substr(p.size()));
        s.word_start = false;
      } else {
        s.text = std::string(token);
        s.word_start = true;
      }
      break;
    }
    case Scheme::Metaspace: {
      const auto& r = spec.metaspace_replacement;
      if (!r.empty() && token.substr(0, r.size()) == r) {
        s.text = std::string(token.substr(r.size()));
        s.word_start = true;
      } else {
        s.text = std::string(token);
        s.word_start = false;
      }
      break;
    }
    case Scheme::ByteLevel: {
      std::size_t i = 0;
      std::string bytes;
      while (i < token.size()) {
        uint32_t cp = 0;
        if (!decode_code_point(token, i, cp)) {
          s.valid = false;
          return s;
        }
        const int b = unicode_to_byte(cp);
        if (b < 0) {
          s.valid = false;
          return s;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!bytes.empty() && bytes[0] == ' ') {
        s.word_start = true;
        s.text = bytes.substr(1);
      } else {
        s.text = bytes;
        s.word_start = false;
      }
      break;
    }
  }
  return s;
}

}  // namespace vs
