#include "util/services.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

namespace scantrace {

namespace {

constexpr std::uint32_t key_of(std::uint16_t port, std::uint8_t proto) {
    return (static_cast<std::uint32_t>(proto) << 16) | port;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// Next whitespace-separated token of `line`, advancing past it; empty at the end.
std::string_view next_token(std::string_view& line) {
    std::size_t i = 0;
    while (i < line.size() && is_space(line[i]))
        ++i;
    std::size_t j = i;
    while (j < line.size() && !is_space(line[j]))
        ++j;
    const std::string_view tok = line.substr(i, j - i);
    line.remove_prefix(j);
    return tok;
}

}  // namespace

ServiceTable ServiceTable::load(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return {};
    std::string text;
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            text.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            // A read error midway keeps what was read: a partial table only
            // leaves some names null, which the format already allows.
            break;
        }
    }
    ::close(fd);
    return parse(text);
}

ServiceTable ServiceTable::parse(std::string_view text) {
    ServiceTable t;
    while (!text.empty()) {
        const std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);

        if (const std::size_t hash = line.find('#'); hash != std::string_view::npos)
            line = line.substr(0, hash);
        const std::string_view name = next_token(line);
        const std::string_view port_proto = next_token(line);
        if (name.empty() || port_proto.empty())
            continue;  // blank, comment-only or malformed line

        const std::size_t slash = port_proto.find('/');
        if (slash == std::string_view::npos)
            continue;
        const std::string_view port_text = port_proto.substr(0, slash);
        const std::string_view proto_text = port_proto.substr(slash + 1);
        std::uint16_t port = 0;
        const char* end = port_text.data() + port_text.size();
        const auto r = std::from_chars(port_text.data(), end, port);
        if (r.ec != std::errc() || r.ptr != end || port_text.empty())
            continue;

        std::uint8_t proto;
        if (proto_text == "tcp")
            proto = 6;
        else if (proto_text == "udp")
            proto = 17;
        else
            continue;  // sctp, ddp: scantrace never reports them
        // emplace keeps an existing entry: the first line for a port is the
        // canonical name, later ones are historical duplicates.
        t.names_.emplace(key_of(port, proto), std::string(name));
    }
    return t;
}

std::optional<std::string_view> ServiceTable::lookup(std::uint16_t port, std::uint8_t proto) const {
    const auto it = names_.find(key_of(port, proto));
    if (it == names_.end())
        return std::nullopt;
    return std::string_view(it->second);
}

}  // namespace scantrace
