#include "output/json_writer.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>

namespace scantrace {

namespace {

constexpr char kHex[] = "0123456789abcdef";

// Eight bytes at once: true when none of them needs attention (a control
// byte, '"', '\\', DEL or a non-ASCII byte). Nearly all of a record is plain
// ASCII, so this is where the writer spends its time.
inline bool clean8(const unsigned char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    constexpr std::uint64_t ones = 0x0101010101010101ull;
    constexpr std::uint64_t highs = 0x8080808080808080ull;
    // Classic SWAR tests; each is exact as a yes/no answer for the word.
    auto has_zero = [](std::uint64_t v) { return (v - ones) & ~v & highs; };
    const std::uint64_t bad = (w & highs)                         // >= 0x80
                              | ((w - ones * 0x20) & ~w & highs)  // < 0x20
                              | has_zero(w ^ (ones * '"')) | has_zero(w ^ (ones * '\\')) | has_zero(w ^ (ones * 0x7f));
    return bad == 0;
}

// 0: copy as is; 1: ASCII that needs an escape; 2: start of a non-ASCII sequence.
constexpr auto kClass = [] {
    std::array<std::uint8_t, 256> t{};
    for (int c = 0; c < 0x20; ++c)
        t[c] = 1;
    t['"'] = t['\\'] = t[0x7f] = 1;
    for (int c = 0x80; c < 0x100; ++c)
        t[c] = 2;
    return t;
}();

inline bool is_cont(unsigned char c) { return (c & 0xc0) == 0x80; }

// Length of the well-formed UTF-8 sequence at p (Unicode Table 3-7), or 0.
// The second-byte ranges are what rule out overlongs (E0 80..9F, F0 80..8F),
// surrogates (ED A0..BF) and code points past U+10FFFF (F4 90..BF, F5..FF).
inline std::size_t utf8_len(const unsigned char* p, std::size_t avail) {
    const unsigned char c = p[0];
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;  // continuation byte, C0/C1 overlong lead, or F5..FF
    }
    if (avail < len || p[1] < lo || p[1] > hi)
        return 0;
    for (std::size_t k = 2; k < len; ++k)
        if (!is_cont(p[k]))
            return 0;
    return len;
}

// The three-byte code points a terminal would act on rather than show:
// bidi embeddings/overrides/isolates and marks, line/paragraph separators
// (which also end a line in JavaScript) and the BOM.
inline bool deceptive(std::uint32_t cp) {
    return cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0xfeff;
}

inline void append_u_escape(std::string& out, std::uint32_t cp) {
    char esc[6] = {'\\', 'u'};
    for (int k = 0; k < 4; ++k)
        esc[2 + k] = kHex[(cp >> (12 - 4 * k)) & 0xf];
    out.append(esc, sizeof esc);
}

inline void append_ascii_escape(std::string& out, unsigned char c) {
    char two[2] = {'\\', 0};
    switch (c) {
    case '"': two[1] = '"'; break;
    case '\\': two[1] = '\\'; break;
    case '\n': two[1] = 'n'; break;
    case '\t': two[1] = 't'; break;
    case '\r': two[1] = 'r'; break;
    case '\b': two[1] = 'b'; break;
    case '\f': two[1] = 'f'; break;
    default: append_u_escape(out, c); return;
    }
    out.append(two, 2);
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i + 8 <= n && clean8(p + i))
        i += 8;
    while (i < n && kClass[p[i]] == 0)
        ++i;
    if (i == n) {
        // The common case (names, addresses, enum values) needs no escape at
        // all: one resize and one copy instead of three appends.
        const std::size_t old = out.size();
        out.resize(old + n + 2);
        char* d = out.data() + old;
        d[0] = '"';
        std::memcpy(d + 1, s.data(), n);
        d[n + 1] = '"';
        return;
    }
    out.reserve(out.size() + n + 2);
    out.push_back('"');

    // Bytes that need no change accumulate in [run, i) and are appended in
    // one go when an escape interrupts them or the input ends.
    std::size_t run = 0;
    while (i < n) {
        while (i + 8 <= n && clean8(p + i))
            i += 8;
        if (i >= n)
            break;
        const unsigned char c = p[i];
        const std::uint8_t cls = kClass[c];
        if (cls == 0) {
            ++i;
            continue;
        }
        if (cls == 1) {
            out.append(s.data() + run, i - run);
            append_ascii_escape(out, c);
            run = ++i;
            continue;
        }
        const std::size_t len = utf8_len(p + i, n - i);
        if (len == 0) {
            // Replace this byte alone and resynchronise on the next one.
            out.append(s.data() + run, i - run);
            out.append("\\ufffd", 6);
            run = ++i;
            continue;
        }
        if (len == 3) {
            const std::uint32_t cp = ((c & 0x0fu) << 12) | ((p[i + 1] & 0x3fu) << 6) | (p[i + 2] & 0x3fu);
            if (deceptive(cp)) {
                out.append(s.data() + run, i - run);
                append_u_escape(out, cp);
                run = i += 3;
                continue;
            }
        }
        i += len;
    }
    out.append(s.data() + run, n - run);
    out.push_back('"');
}

bool JsonWriter::needs_comma() const {
    if (depth_ == 0)
        return false;
    const char last = out_.back();
    return last != '{' && last != '[' && last != ':';
}

void JsonWriter::comma() {
    if (needs_comma())
        out_.push_back(',');
}

JsonWriter& JsonWriter::begin_object() {
    comma();
    out_.push_back('{');
    ++depth_;
    return *this;
}

JsonWriter& JsonWriter::end_object() {
    if (depth_ > 0)
        --depth_;
    out_.push_back('}');
    return *this;
}

JsonWriter& JsonWriter::begin_array() {
    comma();
    out_.push_back('[');
    ++depth_;
    return *this;
}

JsonWriter& JsonWriter::end_array() {
    if (depth_ > 0)
        --depth_;
    out_.push_back(']');
    return *this;
}

JsonWriter& JsonWriter::key(JsonKey k) {
    // One append of `,"key":` built on the stack (JsonKey bounds the size).
    char buf[JsonKey::kMax + 4];
    std::size_t n = 0;
    if (needs_comma())
        buf[n++] = ',';
    buf[n++] = '"';
    std::memcpy(buf + n, k.data(), k.size());
    n += k.size();
    buf[n++] = '"';
    buf[n++] = ':';
    out_.append(buf, n);
    return *this;
}

JsonWriter& JsonWriter::dynamic_key(std::string_view k) {
    comma();
    append_json_string(out_, k);
    out_.push_back(':');
    return *this;
}

JsonWriter& JsonWriter::str(std::string_view v) {
    comma();
    append_json_string(out_, v);
    return *this;
}

// The comma and the digits in one append.
template <typename Int>
JsonWriter& JsonWriter::integer(Int v) {
    char buf[24];
    char* p = buf;
    if (needs_comma())
        *p++ = ',';
    const auto r = std::to_chars(p, buf + sizeof buf, v);
    out_.append(buf, r.ptr);
    return *this;
}

JsonWriter& JsonWriter::u64(std::uint64_t v) { return integer(v); }

JsonWriter& JsonWriter::i64(std::int64_t v) { return integer(v); }

JsonWriter& JsonWriter::f64(double v, int decimals) {
    if (!std::isfinite(v))
        return null();  // JSON has no NaN or Infinity
    comma();
    // DBL_MAX in fixed notation is 309 digits; with a sign, a point and the
    // clamped decimals it fits with room to spare.
    if (decimals < 0)
        decimals = 0;
    if (decimals > 30)
        decimals = 30;
    char buf[400];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals);
    if (r.ec != std::errc()) {
        out_.append("null", 4);  // unreachable with this buffer; stay valid JSON regardless
        return *this;
    }
    out_.append(buf, r.ptr);
    return *this;
}

JsonWriter& JsonWriter::boolean(bool v) {
    comma();
    if (v)
        out_.append("true", 4);
    else
        out_.append("false", 5);
    return *this;
}

JsonWriter& JsonWriter::null() {
    comma();
    out_.append("null", 4);
    return *this;
}

}  // namespace scantrace
