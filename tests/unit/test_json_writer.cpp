#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "output/json_writer.h"

using namespace scantrace;
using namespace std::string_literals;

namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string record_with(std::string_view s) {
    std::string out;
    JsonWriter(out).begin_object().field("s", s).end_object();
    return out;
}

// Writes s as a field, checks the line is JSON with no raw control byte, and
// returns the string a consumer reads back.
std::string round_trip(std::string_view s) {
    const std::string line = record_with(s);
    for (unsigned char c : line) {
        CHECK(c >= 0x20);
        CHECK(c != 0x7f);
    }
    nlohmann::json j;
    REQUIRE_NOTHROW(j = nlohmann::json::parse(line));
    REQUIRE(j.is_object());
    REQUIRE(j["s"].is_string());
    return j["s"].get<std::string>();
}

std::string repeat(const std::string& s, int n) {
    std::string r;
    for (int i = 0; i < n; ++i)
        r += s;
    return r;
}

// Reference model of the documented policy, written independently of the
// writer: decode a code point the long way and check its range, and replace
// one byte at a time when that fails.
std::string expected_decoding(std::string_view s) {
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len != 0 && i + len <= s.size();
        std::uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
        for (std::size_t k = 1; ok && k < len; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            ok = (d & 0xc0) == 0x80;
            cp = (cp << 6) | (d & 0x3f);
        }
        if (ok) {
            const std::uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= min[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            out += kFffd;
            ++i;
        }
    }
    return out;
}

}  // namespace

TEST_CASE("every ASCII control byte and DEL is escaped and survives") {
    for (int b = 0; b < 0x20; ++b) {
        const std::string s = "a"s + static_cast<char>(b) + "b";
        CHECK(round_trip(s) == s);
    }
    CHECK(round_trip("a\177b") == "a\177b");  // octal: "\x7fb" would be one escape
    CHECK(record_with("\x7f") == R"({"s":"\u007f"})");
    CHECK(record_with("\x01") == R"({"s":"\u0001"})");
    CHECK(record_with("\x1f") == R"({"s":"\u001f"})");
    CHECK(record_with(std::string_view("\0", 1)) == R"({"s":"\u0000"})");
    CHECK(record_with("\n\t\r\b\f") == R"({"s":"\n\t\r\b\f"})");
    CHECK(record_with("say \"hi\" \\o/") == R"({"s":"say \"hi\" \\o/"})");
    CHECK(round_trip("say \"hi\" \\o/") == "say \"hi\" \\o/");
}

TEST_CASE("plain ASCII is copied as is") {
    CHECK(record_with("") == R"({"s":""})");
    CHECK(record_with("nginx: worker process") == R"({"s":"nginx: worker process"})");
    const std::string long_ascii = repeat("0123456789abcdef", 40);
    CHECK(record_with(long_ascii) == "{\"s\":\"" + long_ascii + "\"}");
}

TEST_CASE("a special byte is found at every offset of a long string") {
    // Moves the hostile byte through every position relative to the 8-byte
    // fast path, including the tail shorter than a word.
    for (char bad : {'\x01', '"', '\\', '\x7f', '\x80', '\x1f'}) {
        for (std::size_t pos = 0; pos < 27; ++pos) {
            std::string s(27, 'x');
            s[pos] = bad;
            const std::string got = round_trip(s);
            if (static_cast<unsigned char>(bad) >= 0x80) {
                std::string want(27, 'x');
                want.replace(pos, 1, kFffd);
                CHECK(got == want);
            } else {
                CHECK(got == s);
            }
        }
    }
}

TEST_CASE("invalid UTF-8 becomes one U+FFFD per byte") {
    CHECK(round_trip("ab\xFF\xFE"
                     "cd") == "ab" + kFffd + kFffd + "cd");
    CHECK(record_with("\xFF") == R"({"s":"\ufffd"})");
    // Truncated three-byte sequence, at the end and before ASCII.
    CHECK(round_trip("\xE2\x82") == kFffd + kFffd);
    CHECK(round_trip("x\xE2\x82") == "x" + kFffd + kFffd);
    CHECK(round_trip("\xE2\x82y") == kFffd + kFffd + "y");
    // Truncated four-byte sequence followed by a valid character.
    CHECK(round_trip("\xF0\x9F\x98"
                     "\xC3\xA9") == kFffd + kFffd + kFffd + "\xC3\xA9");
    // Overlongs.
    CHECK(round_trip("\xC0\xAF") == kFffd + kFffd);
    CHECK(round_trip("\xC1\xBF") == kFffd + kFffd);
    CHECK(round_trip("\xE0\x80\xAF") == repeat(kFffd, 3));
    CHECK(round_trip("\xE0\x9F\xBF") == repeat(kFffd, 3));
    CHECK(round_trip("\xF0\x8F\xBF\xBF") == repeat(kFffd, 4));
    // Encoded surrogates.
    CHECK(round_trip("\xED\xA0\x80") == repeat(kFffd, 3));
    CHECK(round_trip("\xED\xBF\xBF") == repeat(kFffd, 3));
    // Past U+10FFFF.
    CHECK(round_trip("\xF4\x90\x80\x80") == repeat(kFffd, 4));
    CHECK(round_trip("\xF5\x80\x80\x80") == repeat(kFffd, 4));
    CHECK(round_trip("\xF8\x88\x80\x80\x80") == repeat(kFffd, 5));
    // Lone continuation bytes; a lead byte interrupted by another lead.
    CHECK(round_trip("\x80\xBF") == kFffd + kFffd);
    CHECK(round_trip("\xC3\xC3\xA9") == kFffd + "\xC3\xA9");
}

TEST_CASE("valid UTF-8 passes through unescaped") {
    for (std::string s : {"\xC3\xA9"s, "\xE2\x82\xAC"s, "\xF0\x9F\x98\x80"s, "\xF4\x8F\xBF\xBF"s, "\xED\x9F\xBF"s,
                          "\xEE\x80\x80"s, "\xC2\x80"s, "\xE0\xA0\x80"s, "\xF0\x90\x80\x80"s, "\xEF\xBF\xBD"s,
                          "\xE2\x80\xAF"s, "\xE2\x81\xA5"s, "\xE2\x81\xAA"s, "\xE2\x80\x8D"s}) {
        CHECK(record_with(s) == "{\"s\":\"" + s + "\"}");
        CHECK(round_trip(s) == s);
    }
}

TEST_CASE("deceptive code points are escaped but keep their value") {
    const std::string rlo = "evil\xE2\x80\xAEgpj.exe";
    const std::string line = record_with(rlo);
    CHECK(line.find("\\u202e") != std::string::npos);
    CHECK(line.find("\xE2\x80\xAE") == std::string::npos);
    CHECK(round_trip(rlo) == rlo);

    const std::string ls =
        "a\xE2\x80\xA8"
        "b";
    CHECK(record_with(ls) == R"({"s":"a\u2028b"})");
    CHECK(round_trip(ls) == ls);

    struct Case {
        std::string utf8;
        const char* escape;
    };
    const Case cases[] = {
        {"\xE2\x80\x8E", "\\u200e"}, {"\xE2\x80\x8F", "\\u200f"}, {"\xE2\x80\xA8", "\\u2028"},
        {"\xE2\x80\xA9", "\\u2029"}, {"\xE2\x80\xAA", "\\u202a"}, {"\xE2\x80\xAB", "\\u202b"},
        {"\xE2\x80\xAC", "\\u202c"}, {"\xE2\x80\xAD", "\\u202d"}, {"\xE2\x80\xAE", "\\u202e"},
        {"\xE2\x81\xA6", "\\u2066"}, {"\xE2\x81\xA7", "\\u2067"}, {"\xE2\x81\xA8", "\\u2068"},
        {"\xE2\x81\xA9", "\\u2069"}, {"\xEF\xBB\xBF", "\\ufeff"},
    };
    for (const Case& c : cases) {
        CHECK(record_with(c.utf8) == "{\"s\":\"" + std::string(c.escape) + "\"}");
        CHECK(round_trip(c.utf8) == c.utf8);
    }
}

TEST_CASE("keys made at run time are escaped; literal keys are copied as they are") {
    std::string out;
    JsonWriter(out).begin_object().dynamic_key("k\"\n\xFF").i64(1).end_object();
    CHECK(out == R"({"k\"\n\ufffd":1})");
    CHECK(nlohmann::json::parse(out).contains("k\"\n" + kFffd));

    std::string lit, dyn;
    JsonWriter(lit).begin_object().key("bytes_acked").u64(1).field("b", 2).end_object();
    JsonWriter(dyn).begin_object().dynamic_key("bytes_acked").u64(1).dynamic_key("b").u64(2).end_object();
    CHECK(lit == R"({"bytes_acked":1,"b":2})");
    CHECK(lit == dyn);
}

TEST_CASE("property: random bytes always give parseable JSON with the documented decoding") {
    std::mt19937 rng(20240229);
    // Mix raw random bytes with pieces that are valid, nearly valid or
    // deceptive so every branch of the decoder is reached often.
    const std::string pieces[] = {"\xC3\xA9",
                                  "\xE2\x82\xAC",
                                  "\xF0\x9F\x98\x80",
                                  "\xE2\x80\xAE",
                                  "\xEF\xBB\xBF",
                                  "\xED\xA0\x80",
                                  "\xC0\xAF",
                                  "\xE2\x82",
                                  "\xF4\x90\x80\x80",
                                  "\"",
                                  "\\"};
    std::uniform_int_distribution<int> len_dist(0, 40), byte_dist(0, 255), kind(0, 3);
    std::uniform_int_distribution<std::size_t> piece_dist(0, std::size(pieces) - 1);
    int failures = 0;
    for (int n = 0; n < 10000; ++n) {
        const int len = len_dist(rng);
        std::string s;
        while (static_cast<int>(s.size()) < len) {
            if (kind(rng) == 0)
                s += pieces[piece_dist(rng)];
            else
                s += static_cast<char>(byte_dist(rng));
        }
        std::string out;
        JsonWriter w(out);
        w.begin_object().field("i", n).field("s", s).key("a").begin_array().str(s).end_array().end_object();
        bool raw_ok = true;
        for (unsigned char c : out)
            raw_ok = raw_ok && c >= 0x20 && c != 0x7f;
        raw_ok = raw_ok && out.find("\xE2\x80\xAE") == std::string::npos;
        nlohmann::json j;
        bool parsed = true;
        try {
            j = nlohmann::json::parse(out);
        } catch (const nlohmann::json::exception&) {
            parsed = false;
        }
        const std::string want = expected_decoding(s);
        const bool same = parsed && j["s"] == want && j["a"][0] == want && j["i"] == n;
        if (!raw_ok || !parsed || !same) {
            if (++failures <= 5)
                FAIL_CHECK("input #" << n << " gave " << out);
        }
    }
    CHECK(failures == 0);
}

TEST_CASE("writer structure") {
    std::string out;
    JsonWriter w(out);
    w.begin_object()
        .field("type", "state")
        .field("v", 1)
        .key("process")
        .null()
        .key("list")
        .begin_array()
        .u64(1)
        .i64(-2)
        .begin_object()
        .field("x", true)
        .end_object()
        .begin_array()
        .end_array()
        .str("s")
        .end_array()
        .key("empty")
        .begin_object()
        .end_object()
        .field("ok", false)
        .end_object();
    CHECK(out == R"({"type":"state","v":1,"process":null,"list":[1,-2,{"x":true},[],"s"],"empty":{},"ok":false})");
    CHECK(nlohmann::json::accept(out));

    // A second record appended after a newline starts fresh: no leading comma.
    out += '\n';
    JsonWriter(out).begin_object().field("n", 2).end_object();
    CHECK(out.substr(out.find('\n') + 1) == R"({"n":2})");

    std::string nested;
    JsonWriter(nested)
        .begin_array()
        .begin_array()
        .u64(1)
        .u64(2)
        .end_array()
        .begin_array()
        .u64(3)
        .end_array()
        .end_array();
    CHECK(nested == "[[1,2],[3]]");
}

TEST_CASE("field overloads pick the right JSON type") {
    std::string out;
    JsonWriter(out)
        .begin_object()
        .field("u16", std::uint16_t{65535})
        .field("u32", std::uint32_t{4294967295u})
        .field("u64", std::numeric_limits<std::uint64_t>::max())
        .field("i64", std::numeric_limits<std::int64_t>::min())
        .field("int", -7)
        .field("b", true)
        .field("cstr", "text")
        .field("sv", std::string_view("view"))
        .end_object();
    CHECK(out == R"({"u16":65535,"u32":4294967295,"u64":18446744073709551615,"i64":-9223372036854775808,)"
                 R"("int":-7,"b":true,"cstr":"text","sv":"view"})");
    const auto j = nlohmann::json::parse(out);
    CHECK(j["u64"].get<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max());
    CHECK(j["i64"].get<std::int64_t>() == std::numeric_limits<std::int64_t>::min());
}

TEST_CASE("f64 uses fixed decimals and never writes NaN") {
    auto f = [](double v, int d) {
        std::string out;
        JsonWriter(out).begin_array().f64(v, d).end_array();
        return out;
    };
    CHECK(f(1.5, 3) == "[1.500]");
    CHECK(f(2.0 / 3.0, 2) == "[0.67]");
    CHECK(f(1234.5678, 1) == "[1234.6]");
    CHECK(f(12.0, 0) == "[12]");
    CHECK(f(-3.25, 1) == "[-3.2]");  // round half to even on the exact binary value 3.25
    CHECK(f(1e20, 1) == "[100000000000000000000.0]");
    CHECK(f(0.001, 6) == "[0.001000]");
    CHECK(f(std::nan(""), 3) == "[null]");
    CHECK(f(std::numeric_limits<double>::infinity(), 3) == "[null]");
    CHECK(f(-std::numeric_limits<double>::infinity(), 3) == "[null]");
    CHECK(f(1.0, -5) == "[1]");

    const std::string big = f(std::numeric_limits<double>::max(), 3);
    CHECK(big.size() > 300);
    CHECK(nlohmann::json::accept(big));

    std::string out;
    JsonWriter(out).begin_object().key("a").f64(std::nan(""), 2).key("b").f64(0.5, 1).end_object();
    CHECK(out == R"({"a":null,"b":0.5})");
}
