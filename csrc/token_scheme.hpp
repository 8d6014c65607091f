// How a vocabulary string encodes "starts a word" and its surface text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace vs {

enum class Scheme { WordPiece, Metaspace, ByteLevel };

Scheme parse_scheme(std::string_view name);  // throws std::invalid_argument

struct SchemeSpec {
  Scheme scheme = Scheme::WordPiece;
  std::string continuation_prefix = "##";      // wordpiece only
  std::string metaspace_replacement = "\xE2\x96\x81";  // U+2581, metaspace only
};

// A token's surface (raw bytes of the text it stands for, without the word
// marker) and whether it starts a word. `valid` is false when the string
// cannot be read in the scheme (e.g. a byte-level token with a character
// outside the byte alphabet).
struct Surface {
  std::string text;
  bool word_start = false;
  bool valid = true;
};

Surface parse_token(std::string_view token, const SchemeSpec& spec);

// `<0xNN>` byte-fallback token -> NN, or -1.
int byte_fallback_value(std::string_view token);

// GPT-2 byte-level alphabet: byte -> code point, and back.
uint32_t byte_to_unicode(uint8_t b);
int unicode_to_byte(uint32_t cp);  // -1 when cp is not in the alphabet

}  // namespace vs
