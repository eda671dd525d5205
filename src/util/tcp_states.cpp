#include "util/tcp_states.h"

#include <charconv>

namespace scantrace {

namespace {

// Indexed by the kernel's TCP_* value (include/net/tcp_states.h); 0 is not a
// state. Values come straight from BPF records, so every lookup is checked.
constexpr std::string_view kNames[] = {
    "",      "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",    "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV", "BOUND_INACTIVE",
};

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char c = a[i];
        if (c >= 'a' && c <= 'z')
            c = static_cast<char>(c - 'a' + 'A');
        if (c != b[i])
            return false;
    }
    return true;
}

}  // namespace

std::string tcp_state_name(unsigned state) {
    if (state > 0 && state < std::size(kNames))
        return std::string(kNames[state]);
    return std::to_string(state);
}

std::string_view tcp_state_view(unsigned state, std::string& scratch) {
    if (state > 0 && state < std::size(kNames)) return kNames[state];
    scratch = std::to_string(state);
    return scratch;
}

std::optional<unsigned> parse_tcp_state(std::string_view name) {
    if (name.empty())
        return std::nullopt;
    for (unsigned i = 1; i < std::size(kNames); ++i)
        if (iequals(name, kNames[i]))
            return i;
    unsigned v = 0;
    const char* end = name.data() + name.size();
    auto [p, ec] = std::from_chars(name.data(), end, v);
    if (ec != std::errc() || p != end)
        return std::nullopt;
    return v;
}

}  // namespace scantrace
