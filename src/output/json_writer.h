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

class JsonWriter {
public:
    explicit JsonWriter(std::string& out) : out_(out) {}

    JsonWriter& begin_object();
    JsonWriter& end_object();
    JsonWriter& begin_array();
    JsonWriter& end_array();
    JsonWriter& key(std::string_view k);  // only inside an object

    JsonWriter& str(std::string_view v);
    JsonWriter& u64(std::uint64_t v);
    JsonWriter& i64(std::int64_t v);
    JsonWriter& f64(double v, int decimals);  // fixed notation; NaN/inf -> null
    JsonWriter& boolean(bool v);
    JsonWriter& null();

    // key + value shorthands
    JsonWriter& field(std::string_view k, std::string_view v) { return key(k).str(v); }
    JsonWriter& field(std::string_view k, const char* v) { return key(k).str(v); }
    JsonWriter& field(std::string_view k, std::uint64_t v) { return key(k).u64(v); }
    JsonWriter& field(std::string_view k, std::uint32_t v) { return key(k).u64(v); }
    JsonWriter& field(std::string_view k, std::uint16_t v) { return key(k).u64(v); }
    JsonWriter& field(std::string_view k, std::int64_t v) { return key(k).i64(v); }
    JsonWriter& field(std::string_view k, int v) { return key(k).i64(v); }
    JsonWriter& field(std::string_view k, bool v) { return key(k).boolean(v); }

private:
    void comma();
    std::string& out_;
    // Whether a value needs a comma is read off the last byte written ('{',
    // '[' or ':' mean no), so the only state is the nesting depth: a writer
    // per record then costs no allocation.
    unsigned depth_ = 0;
};

}  // namespace scantrace
