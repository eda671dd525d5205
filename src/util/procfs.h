// The listening-socket inventory at start, read from procfs across every
// network namespace that has a process in it: this is `netstat -ntulp`, for
// all namespaces at once, plus the owner's cgroup id.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/netaddr.h"

namespace scantrace {

struct ProcSocket {
    std::uint8_t proto = 6;  // 6 tcp, 17 udp
    IpAddr laddr;
    std::uint16_t lport = 0;
    IpAddr raddr;
    std::uint16_t rport = 0;
    unsigned state = 0;  // kernel TCP state number (UDP uses 7 when unconnected)
    std::uint32_t uid = 0;
    std::uint64_t inode = 0;
};

// Parses one data line of /proc/net/{tcp,tcp6,udp,udp6} (the kernel prints
// addresses as native-endian hex words). is_v6 picks the address width;
// IPv4-mapped addresses fold into IPv4. nullopt for the header or a bad line.
std::optional<ProcSocket> parse_proc_net_line(std::string_view line, std::uint8_t proto, bool is_v6);

struct ProcessInfo {
    std::uint32_t pid = 0;
    std::string comm;
    std::uint32_t uid = 0;
    std::uint64_t cgroup_id = 0;  // 0 when unknown
};

struct ListeningSocket {
    ProcSocket sock;
    std::uint32_t netns = 0;  // inode of the network namespace
    std::optional<ProcessInfo> owner;
};

// Every TCP socket in LISTEN and every unconnected bound UDP socket (remote
// 0:0, local port != 0), in every network namespace that some process is in.
// Owner: the lowest pid holding an fd to the socket inode. Unreadable entries
// (processes exiting mid-scan) are skipped, never fatal.
std::vector<ListeningSocket> scan_listening(const std::string& proc_root = "/proc");

// Mount point of the first filesystem of this type in /proc/self/mounts
// ("cgroup2", "bpf", "tracefs"), or nullopt.
std::optional<std::string> find_mount(std::string_view fstype, const std::string& mounts_path = "/proc/self/mounts");

// cgroup v2 id (inode of the cgroup directory) of a process, or 0.
std::uint64_t cgroup_id_of(std::uint32_t pid, const std::string& proc_root = "/proc");

// Inode of a process's network namespace (/proc/PID/ns/net), or 0.
std::uint32_t netns_of(std::uint32_t pid, const std::string& proc_root = "/proc");

// The cookie of the network namespace process pid is in (SO_NETNS_COOKIE,
// Linux 5.14), read from a socket created there by a short-lived thread that
// joins the namespace; the caller's own namespace is untouched. nullopt when
// the process is gone or the kernel lacks the option.
std::optional<std::uint64_t> netns_cookie_of(std::uint32_t pid, const std::string& proc_root = "/proc");

}  // namespace scantrace
