// A streaming JSON writer for one record per line. Everything written through
// it is valid JSON whatever the input bytes: process names and kernel strings
// may hold control bytes, invalid UTF-8 or bidi overrides.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace scantrace {

// Appends s as a quoted JSON string. Escapes: " \ and bytes 0x00-0x1f, 0x7f
// as \u00XX (\n \t \r \b \f short forms allowed); each byte of an invalid
// UTF-8 sequence becomes \ufffd (one per byte, not one per maximal subpart:
// "\xE2\x82" gives two, so the count of bad bytes survives); the valid but
// deceptive code points U+2028, U+2029, U+200E/F, U+202A-202E, U+2066-2069
// and U+FEFF are written as \uXXXX escapes so a terminal never renders them
// raw.
void append_json_string(std::string& out, std::string_view s);

// An object key written by this program: a string literal, checked when the
// program is compiled (a byte that would need an escape stops the build), so
// writing it is a plain copy. Keys are a third of a record's bytes; escaping
// them at run time was the largest cost of the writer. Keys computed at run
// time go through JsonWriter::dynamic_key, which escapes.
class JsonKey {
public:
    template <std::size_t N>
    consteval JsonKey(const char (&s)[N]) : p_(s), n_(N - 1) {  // NOLINT: implicit on purpose
        if (N - 1 > kMax)
            throw "a JsonKey literal is at most kMax bytes";
        for (std::size_t i = 0; i + 1 < N; ++i) {
            const auto c = static_cast<unsigned char>(s[i]);
            if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f)
                throw "a JsonKey literal must be printable ASCII without quote or backslash";
        }
    }
    const char* data() const { return p_; }
    std::size_t size() const { return n_; }
    static constexpr std::size_t kMax = 64;  // lets the writer build `,"key":` on the stack

private:
    const char* p_;
    std::size_t n_;
};

class JsonWriter {
public:
    explicit JsonWriter(std::string& out) : out_(out) {}

    JsonWriter& begin_object();
    JsonWriter& end_object();
    JsonWriter& begin_array();
    JsonWriter& end_array();
    JsonWriter& key(JsonKey k);                  // only inside an object
    JsonWriter& dynamic_key(std::string_view k);  // a key made at run time: escaped

    JsonWriter& str(std::string_view v);
    JsonWriter& u64(std::uint64_t v);
    JsonWriter& i64(std::int64_t v);
    JsonWriter& f64(double v, int decimals);  // fixed notation; NaN/inf -> null
    JsonWriter& boolean(bool v);
    JsonWriter& null();

    // key + value shorthands
    JsonWriter& field(JsonKey k, std::string_view v) { return key(k).str(v); }
    JsonWriter& field(JsonKey k, const char* v) { return key(k).str(v); }
    JsonWriter& field(JsonKey k, std::uint64_t v) { return key(k).u64(v); }
    JsonWriter& field(JsonKey k, std::uint32_t v) { return key(k).u64(v); }
    JsonWriter& field(JsonKey k, std::uint16_t v) { return key(k).u64(v); }
    JsonWriter& field(JsonKey k, std::int64_t v) { return key(k).i64(v); }
    JsonWriter& field(JsonKey k, int v) { return key(k).i64(v); }
    JsonWriter& field(JsonKey k, bool v) { return key(k).boolean(v); }

private:
    bool needs_comma() const;
    void comma();
    template <typename Int>
    JsonWriter& integer(Int v);
    std::string& out_;
    // Whether a value needs a comma is read off the last byte written ('{',
    // '[' or ':' mean no), so the only state is the nesting depth: a writer
    // per record then costs no allocation.
    unsigned depth_ = 0;
};

}  // namespace scantrace
