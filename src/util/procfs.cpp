#include "util/procfs.h"

#include <thread>

#include <sys/socket.h>

#include <sched.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <tuple>
#include <unordered_map>

#include "scantrace/events.h"

namespace scantrace {

namespace {

constexpr unsigned kTcpListen = 10;

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_;
};

struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

ssize_t read_retry(int fd, char* buf, std::size_t len) {
    ssize_t n;
    do {
        n = ::read(fd, buf, len);
    } while (n < 0 && errno == EINTR);
    return n;
}

// Whole content of a small procfs file (comm, status, cgroup, mounts).
// procfs reports size 0, so read until EOF instead of trusting fstat.
bool read_file(const std::string& path, std::string& out) {
    out.clear();
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        return false;
    char buf[4096];
    for (;;) {
        const ssize_t n = read_retry(fd.get(), buf, sizeof buf);
        if (n < 0)
            return false;
        if (n == 0)
            return true;
        out.append(buf, static_cast<std::size_t>(n));
    }
}

// Calls fn for each line of a file without holding it all in memory: a busy
// server's /proc/net/tcp can run to hundreds of megabytes.
template <class Fn>
bool for_each_line(const std::string& path, Fn&& fn) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        return false;
    std::string pending;
    char buf[65536];
    for (;;) {
        const ssize_t n = read_retry(fd.get(), buf, sizeof buf);
        if (n < 0)
            return false;
        if (n == 0)
            break;
        pending.append(buf, static_cast<std::size_t>(n));
        std::size_t start = 0, nl;
        while ((nl = pending.find('\n', start)) != std::string::npos) {
            fn(std::string_view(pending).substr(start, nl - start));
            start = nl + 1;
        }
        pending.erase(0, start);
    }
    if (!pending.empty())
        fn(std::string_view(pending));
    return true;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view next_token(std::string_view& s) {
    std::size_t i = 0;
    while (i < s.size() && is_space(s[i]))
        ++i;
    std::size_t j = i;
    while (j < s.size() && !is_space(s[j]))
        ++j;
    const std::string_view tok = s.substr(i, j - i);
    s.remove_prefix(j);
    return tok;
}

// Whole-token number; from_chars alone would accept a numeric prefix.
template <class T>
bool parse_num(std::string_view s, T& v, int base = 10) {
    if (s.empty())
        return false;
    const char* end = s.data() + s.size();
    const auto r = std::from_chars(s.data(), end, v, base);
    return r.ec == std::errc() && r.ptr == end;
}

// "0100007F:1F90": the address is the kernel's in-memory words, each printed
// with %08X as a native u32, so storing each parsed word back in native order
// restores the network-order bytes on any host. The port is a plain number.
bool parse_endpoint(std::string_view tok, bool is_v6, IpAddr& addr, std::uint16_t& port) {
    const std::size_t hex_len = is_v6 ? 32 : 8;
    if (tok.size() != hex_len + 5 || tok[hex_len] != ':')
        return false;
    std::uint8_t raw[16] = {};
    for (std::size_t w = 0; w < hex_len / 8; ++w) {
        std::uint32_t word;
        if (!parse_num(tok.substr(w * 8, 8), word, 16))
            return false;
        std::memcpy(raw + w * 4, &word, 4);
    }
    if (!parse_num(tok.substr(hex_len + 1), port, 16))
        return false;
    addr = IpAddr::from_raw(is_v6 ? ST_AF_INET6 : ST_AF_INET, raw);
    return true;
}

std::string pid_path(const std::string& proc_root, std::uint32_t pid, const char* rest) {
    std::string p = proc_root;
    p += '/';
    p += std::to_string(pid);
    p += rest;
    return p;
}

// "socket:[12345]" -> 12345, "net:[4026531840]" -> 4026531840; 0 otherwise.
std::uint64_t bracketed_inode(std::string_view link, std::string_view prefix) {
    if (link.size() < prefix.size() + 3 || link.substr(0, prefix.size()) != prefix || link[prefix.size()] != '[' ||
        link.back() != ']')
        return 0;
    std::uint64_t ino = 0;
    if (!parse_num(link.substr(prefix.size() + 1, link.size() - prefix.size() - 2), ino))
        return 0;
    return ino;
}

// Mount points in /proc/self/mounts escape space, tab, newline and backslash
// as three-digit octal (\040).
std::string unescape_mount(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            unsigned v = 0;
            if (parse_num(s.substr(i + 1, 3), v, 8) && v < 256) {
                out.push_back(static_cast<char>(v));
                i += 3;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

std::vector<std::uint32_t> list_pids(const std::string& proc_root) {
    std::vector<std::uint32_t> pids;
    DirPtr dir(::opendir(proc_root.c_str()));
    if (!dir)
        return pids;
    while (const dirent* e = ::readdir(dir.get())) {
        std::uint32_t pid;
        if (parse_num(std::string_view(e->d_name), pid) && pid > 0)
            pids.push_back(pid);
    }
    std::sort(pids.begin(), pids.end());
    return pids;
}

// Reads the four tables of the namespace `rep` is in, keeping listeners only.
bool read_listeners(const std::string& proc_root, std::uint32_t rep, std::vector<ProcSocket>& out) {
    struct Table {
        const char* file;
        std::uint8_t proto;
        bool is_v6;
    };
    static constexpr Table tables[] = {
        {"/net/tcp", ST_PROTO_TCP, false},
        {"/net/tcp6", ST_PROTO_TCP, true},
        {"/net/udp", ST_PROTO_UDP, false},
        {"/net/udp6", ST_PROTO_UDP, true},
    };
    bool any = false;
    for (const Table& t : tables) {
        // tcp6/udp6 are absent when IPv6 is disabled; that is not a failure.
        any |= for_each_line(pid_path(proc_root, rep, t.file), [&](std::string_view line) {
            auto s = parse_proc_net_line(line, t.proto, t.is_v6);
            if (!s)
                return;
            const bool keep = t.proto == ST_PROTO_TCP ? s->state == kTcpListen
                                                      : s->rport == 0 && s->raddr.is_unspecified() && s->lport != 0;
            if (keep)
                out.push_back(*s);
        });
    }
    return any;
}

std::optional<ProcessInfo> process_info(const std::string& proc_root, std::uint32_t pid) {
    std::string text;
    // status is what tells us the process is still there; without it we
    // would be reporting a guess.
    if (!read_file(pid_path(proc_root, pid, "/status"), text))
        return std::nullopt;
    ProcessInfo info;
    info.pid = pid;
    const std::size_t at = text.find("\nUid:");
    if (at == std::string::npos)
        return std::nullopt;
    std::string_view rest = std::string_view(text).substr(at + 5);
    if (!parse_num(next_token(rest), info.uid))
        return std::nullopt;

    if (read_file(pid_path(proc_root, pid, "/comm"), text)) {
        if (!text.empty() && text.back() == '\n')
            text.pop_back();
        info.comm = std::move(text);
    }
    info.cgroup_id = cgroup_id_of(pid, proc_root);
    return info;
}

}  // namespace

std::optional<ProcSocket> parse_proc_net_line(std::string_view line, std::uint8_t proto, bool is_v6) {
    ProcSocket s;
    s.proto = proto;

    std::string_view sl = next_token(line);  // "12:"; the header's "sl" fails here
    std::uint64_t slot;
    if (sl.size() < 2 || sl.back() != ':' || !parse_num(sl.substr(0, sl.size() - 1), slot))
        return std::nullopt;
    if (!parse_endpoint(next_token(line), is_v6, s.laddr, s.lport) ||
        !parse_endpoint(next_token(line), is_v6, s.raddr, s.rport))
        return std::nullopt;
    if (!parse_num(next_token(line), s.state, 16))
        return std::nullopt;
    for (int skip = 0; skip < 3; ++skip)  // tx:rx queues, timer, retransmits
        if (next_token(line).empty())
            return std::nullopt;
    if (!parse_num(next_token(line), s.uid))
        return std::nullopt;
    std::int64_t timeout;
    if (!parse_num(next_token(line), timeout))
        return std::nullopt;
    if (!parse_num(next_token(line), s.inode))
        return std::nullopt;
    return s;
}

std::optional<std::string> find_mount(std::string_view fstype, const std::string& mounts_path) {
    std::optional<std::string> found;
    for_each_line(mounts_path, [&](std::string_view line) {
        if (found)
            return;
        next_token(line);  // source
        const std::string_view mnt = next_token(line);
        if (!mnt.empty() && next_token(line) == fstype)
            found = unescape_mount(mnt);
    });
    return found;
}

std::uint64_t cgroup_id_of(std::uint32_t pid, const std::string& proc_root) {
    // Mounts rarely change while we run and this is asked once per owner.
    static const std::optional<std::string> cgroup2 = find_mount("cgroup2");
    if (!cgroup2)
        return 0;
    std::string text;
    if (!read_file(pid_path(proc_root, pid, "/cgroup"), text))
        return 0;
    // Only the v2 hierarchy ("0::/path") has the ids BPF reports
    // (bpf_get_current_cgroup_id); v1 lines are "N:controllers:/path".
    std::string_view rest = text;
    while (!rest.empty()) {
        const std::size_t nl = rest.find('\n');
        const std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        if (line.substr(0, 3) != "0::")
            continue;
        std::string path = *cgroup2;
        path += line.substr(3);
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return 0;
        return st.st_ino;
    }
    return 0;
}

std::uint32_t netns_of(std::uint32_t pid, const std::string& proc_root) {
    const std::string path = pid_path(proc_root, pid, "/ns/net");
    char buf[64];
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf)
        return 0;
    const std::uint64_t ino = bracketed_inode(std::string_view(buf, static_cast<std::size_t>(n)), "net:");
    return ino <= UINT32_MAX ? static_cast<std::uint32_t>(ino) : 0;
}

std::vector<ListeningSocket> scan_listening(const std::string& proc_root) {
    const std::vector<std::uint32_t> pids = list_pids(proc_root);

    // One pass over pids for their namespace: every namespace some process
    // is in, with its members in ascending order as fallbacks should the
    // first exit before we read its tables.
    std::unordered_map<std::uint32_t, std::vector<std::uint32_t>> members;
    for (std::uint32_t pid : pids)
        if (const std::uint32_t ns = netns_of(pid, proc_root); ns != 0)
            members[ns].push_back(pid);

    std::vector<ListeningSocket> result;
    for (const auto& [ns, candidates] : members) {
        for (std::uint32_t rep : candidates) {
            std::vector<ProcSocket> socks;
            if (!read_listeners(proc_root, rep, socks))
                continue;
            // The pid could have exited and been reused by a process in
            // another namespace between the two reads; then the tables we
            // read are not this namespace's.
            if (netns_of(rep, proc_root) != ns)
                continue;
            for (ProcSocket& s : socks)
                result.push_back(ListeningSocket{s, ns, std::nullopt});
            break;
        }
    }
    if (result.empty())
        return result;
    // Namespaces come out of a hash map; a stable order makes the inventory
    // diffable between runs.
    std::sort(result.begin(), result.end(), [](const ListeningSocket& a, const ListeningSocket& b) {
        return std::tie(a.netns, a.sock.proto, a.sock.lport, a.sock.inode) <
               std::tie(b.netns, b.sock.proto, b.sock.lport, b.sock.inode);
    });

    // Socket inodes are unique system-wide, so one map serves all namespaces.
    std::unordered_map<std::uint64_t, std::uint32_t> owner_of;  // inode -> lowest pid, 0 = none yet
    for (const ListeningSocket& l : result)
        if (l.sock.inode != 0)
            owner_of.emplace(l.sock.inode, 0);
    std::size_t unowned = owner_of.size();

    // readlink on every fd is the cost of this scan (a server may hold tens of
    // thousands); resolving names relative to the open fd directory at least
    // spares building a path for each. pids ascend, so the first holder found
    // is the lowest, and once every socket has one the rest can be skipped.
    for (std::uint32_t pid : pids) {
        if (unowned == 0)
            break;
        const int fd = ::open(pid_path(proc_root, pid, "/fd").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;  // exited, or not ours to read
        DirPtr dir(::fdopendir(fd));
        if (!dir) {
            ::close(fd);
            continue;
        }
        const int dfd = ::dirfd(dir.get());
        while (const dirent* e = ::readdir(dir.get())) {
            if (e->d_name[0] == '.')
                continue;
            char link[64];
            const ssize_t n = ::readlinkat(dfd, e->d_name, link, sizeof link);
            if (n <= 0 || static_cast<std::size_t>(n) >= sizeof link)
                continue;
            const std::uint64_t ino = bracketed_inode(std::string_view(link, static_cast<std::size_t>(n)), "socket:");
            if (ino == 0)
                continue;
            const auto it = owner_of.find(ino);
            if (it != owner_of.end() && it->second == 0) {
                it->second = pid;
                --unowned;
            }
        }
    }

    std::unordered_map<std::uint32_t, std::optional<ProcessInfo>> info_cache;
    for (ListeningSocket& l : result) {
        const auto it = owner_of.find(l.sock.inode);
        if (it == owner_of.end() || it->second == 0)
            continue;
        auto [ci, inserted] = info_cache.try_emplace(it->second);
        if (inserted)
            ci->second = process_info(proc_root, it->second);
        l.owner = ci->second;
    }
    return result;
}

std::optional<std::uint64_t> netns_cookie_of(std::uint32_t pid, const std::string& proc_root) {
    constexpr int kSoNetnsCookie = 71;  // SO_NETNS_COOKIE, absent from older headers
    const std::string path = proc_root + "/" + std::to_string(pid) + "/ns/net";
    std::optional<std::uint64_t> out;
    std::thread t([&] {
        int nsfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) return;
        if (::setns(nsfd, CLONE_NEWNET) == 0) {
            int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (s >= 0) {
                std::uint64_t cookie = 0;
                socklen_t len = sizeof(cookie);
                if (::getsockopt(s, SOL_SOCKET, kSoNetnsCookie, &cookie, &len) == 0) out = cookie;
                ::close(s);
            }
        }
        ::close(nsfd);
    });
    t.join();
    return out;
}

}  // namespace scantrace
