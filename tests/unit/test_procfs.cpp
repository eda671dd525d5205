#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "util/procfs.h"

using namespace scantrace;

namespace {

// Captured from this kind of host (x86_64, little-endian) with
// `python3 -m http.server 18080 --bind ::` running and clients connected
// over 127.0.0.1 and ::1.
constexpr const char* kTcpHeader =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
constexpr const char* kTcp6Header =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
constexpr const char* kV4Listen =
    "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0    "
    "    0 576 1 000000006caaf383 100 0 0 10 0                       ";
constexpr const char* kV4Established =
    "   2: 0100007F:A77C 0100007F:46A0 01 00000000:00000000 00:00000000 00000000  "
    "1000        0 9081 2 00000000aa002eea 20 0 0 10 -1";
constexpr const char* kV6Listen =
    "   0: 00000000000000000000000000000000:46A0 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 9062 1 000000005c943b04 100 0 "
    "0 10 0";
constexpr const char* kV6Loopback =
    "   1: 00000000000000000000000001000000:46A0 00000000000000000000000001000000:C3FC "
    "01 00000000:00000000 00:00000000 00000000     0        0 8039 1 "
    "00000000d2a6c1e4 20 0 0 10 -1";
constexpr const char* kV6Mapped =
    "   2: 0000000000000000FFFF00000100007F:46A0 0000000000000000FFFF00000100007F:A77C 01 "
    "00000000:00000000 00:00000000 00000000     0        0 8038 1 000000006ca13931 20 0 "
    "0 10 -1";
constexpr const char* kUdpBound =
    " 8196: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0 "
    "       0 9111 2 0000000033615dfc 0          ";
constexpr const char* kUdp6Connected =
    " 7389: 00000000000000000000000001000000:D1C2 "
    "00000000000000000000000001000000:0035 01 00000000:00000000 00:00000000 "
    "00000000     0        0 9112 2 00000000d01f6379 0";

constexpr bool kLittleEndian = std::endian::native == std::endian::little;

std::string read_all(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/scantrace-procfs-XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string write(const std::string& rel, const std::string& text) const {
        const std::string p = path + "/" + rel;
        std::ofstream(p) << text;
        return p;
    }
};

struct Socket {
    int fd;
    explicit Socket(int f) : fd(f) {}
    ~Socket() {
        if (fd >= 0)
            close(fd);
    }
};

std::uint64_t inode_of(int fd) {
    struct stat st {};
    REQUIRE(fstat(fd, &st) == 0);
    return st.st_ino;
}

}  // namespace

TEST_CASE("parse_proc_net_line: IPv4") {
    if (!kLittleEndian)
        return;  // the samples are little-endian captures
    auto l = parse_proc_net_line(kV4Listen, 6, false);
    REQUIRE(l);
    CHECK(l->proto == 6);
    CHECK(l->laddr == IpAddr::v4(0, 0, 0, 0));
    CHECK(l->lport == 2024);
    CHECK(l->raddr.is_unspecified());
    CHECK(l->rport == 0);
    CHECK(l->state == 10);
    CHECK(l->uid == 0);
    CHECK(l->inode == 576);

    auto e = parse_proc_net_line(kV4Established, 6, false);
    REQUIRE(e);
    CHECK(e->laddr.to_string() == "127.0.0.1");
    CHECK(e->lport == 0xA77C);
    CHECK(e->raddr.to_string() == "127.0.0.1");
    CHECK(e->rport == 18080);
    CHECK(e->state == 1);
    CHECK(e->uid == 1000);
    CHECK(e->inode == 9081);

    auto u = parse_proc_net_line(kUdpBound, 17, false);
    REQUIRE(u);
    CHECK(u->proto == 17);
    CHECK(u->lport == 5353);
    CHECK(u->state == 7);
    CHECK(u->inode == 9111);

    // The same bytes read in the IPv4 case work from the documented example.
    auto doc = parse_proc_net_line(
        "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 12345 1 0000000000000000 100 0 0 10 0",
        6, false);
    REQUIRE(doc);
    CHECK(doc->laddr == IpAddr::v4(127, 0, 0, 1));
    CHECK(doc->lport == 8080);
}

TEST_CASE("parse_proc_net_line: IPv6 and IPv4-mapped") {
    if (!kLittleEndian)
        return;
    auto l = parse_proc_net_line(kV6Listen, 6, true);
    REQUIRE(l);
    CHECK(l->laddr.family == Family::v6);
    CHECK(l->laddr.to_string() == "::");
    CHECK(l->lport == 18080);
    CHECK(l->state == 10);
    CHECK(l->inode == 9062);

    auto lo = parse_proc_net_line(kV6Loopback, 6, true);
    REQUIRE(lo);
    CHECK(lo->laddr.to_string() == "::1");
    CHECK(lo->raddr.to_string() == "::1");
    CHECK(lo->rport == 0xC3FC);
    CHECK(lo->state == 1);

    auto m = parse_proc_net_line(kV6Mapped, 6, true);
    REQUIRE(m);
    CHECK(m->laddr.family == Family::v4);
    CHECK(m->laddr == IpAddr::v4(127, 0, 0, 1));
    CHECK(m->raddr == IpAddr::v4(127, 0, 0, 1));
    CHECK(m->lport == 18080);
    CHECK(m->rport == 0xA77C);

    auto u = parse_proc_net_line(kUdp6Connected, 17, true);
    REQUIRE(u);
    CHECK(u->raddr.to_string() == "::1");
    CHECK(u->rport == 53);
}

TEST_CASE("parse_proc_net_line: headers and garbage") {
    CHECK(!parse_proc_net_line(kTcpHeader, 6, false));
    CHECK(!parse_proc_net_line(kTcp6Header, 6, true));
    CHECK(!parse_proc_net_line("", 6, false));
    CHECK(!parse_proc_net_line("garbage", 6, false));
    CHECK(!parse_proc_net_line("   0: 0100007F:1F90", 6, false));
    CHECK(!parse_proc_net_line("   0: 0100007F:1F90 00000000:0000 0A", 6, false));
    // Width must match the family.
    CHECK(!parse_proc_net_line(kV4Listen, 6, true));
    CHECK(!parse_proc_net_line(kV6Listen, 6, false));
    // Bad hex, bad numbers, missing colon after the slot.
    CHECK(!parse_proc_net_line("   0: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", 6,
                               false));
    CHECK(!parse_proc_net_line("   0: 0100007F:1F90 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1 1", 6,
                               false));
    CHECK(!parse_proc_net_line("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 x 0 1 1", 6,
                               false));
    CHECK(!parse_proc_net_line("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -1", 6,
                               false));
    CHECK(!parse_proc_net_line("   0 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", 6,
                               false));
    CHECK(!parse_proc_net_line("   0: 0100007F:11F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
                               6, false));
    CHECK(parse_proc_net_line("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", 6,
                              false));
}

TEST_CASE("parse_proc_net_line accepts every line of this machine's tables") {
    for (const auto& [file, v6] : {std::pair{"/proc/self/net/tcp", false}, std::pair{"/proc/self/net/tcp6", true},
                                   std::pair{"/proc/self/net/udp", false}, std::pair{"/proc/self/net/udp6", true}}) {
        std::istringstream in(read_all(file));
        std::string line;
        bool header = true;
        while (std::getline(in, line)) {
            if (header) {
                CHECK(!parse_proc_net_line(line, 6, v6));
                header = false;
            } else {
                CHECK_MESSAGE(parse_proc_net_line(line, 6, v6).has_value(), line);
            }
        }
    }
}

TEST_CASE("find_mount on a synthetic mounts file") {
    TempDir dir;
    const std::string mounts = dir.write("mounts",
                                         "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
                                         "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
                                         "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
                                         "cgroup2 /second cgroup2 rw 0 0\n"
                                         "bpf /sys/fs/bpf bpf rw,relatime,mode=700 0 0\n"
                                         "tmpfs /mnt/with\\040space\\134x tmpfs rw 0 0\n"
                                         "tracefs /sys/kernel/tracing tracefs rw 0 0");  // no final newline
    CHECK(find_mount("cgroup2", mounts) == "/sys/fs/cgroup/unified");
    CHECK(find_mount("cgroup", mounts) == "/sys/fs/cgroup/cpu");
    CHECK(find_mount("bpf", mounts) == "/sys/fs/bpf");
    CHECK(find_mount("tmpfs", mounts) == "/mnt/with space\\x");
    CHECK(find_mount("tracefs", mounts) == "/sys/kernel/tracing");
    CHECK(!find_mount("debugfs", mounts));
    CHECK(!find_mount("cgroup2", dir.path + "/missing"));
    CHECK(!find_mount("", mounts));
}

TEST_CASE("netns_of and cgroup_id_of") {
    const std::uint32_t ns = netns_of(static_cast<std::uint32_t>(getpid()));
    struct stat st {};
    REQUIRE(stat("/proc/self/ns/net", &st) == 0);
    CHECK(ns != 0);
    CHECK(ns == st.st_ino);
    CHECK(netns_of(0x7ffffff0u) == 0);  // no such process
    CHECK(netns_of(1, "/nonexistent") == 0);

    CHECK(cgroup_id_of(0x7ffffff0u) == 0);

    const auto cg2 = find_mount("cgroup2");
    if (!cg2)
        return;
    // A fake proc root pins the cgroup path, so the expected id is known.
    TempDir dir;
    REQUIRE(mkdir((dir.path + "/42").c_str(), 0755) == 0);
    dir.write("42/cgroup", "4:memory:/elsewhere\n0::/\n");
    struct stat root {};
    REQUIRE(stat(cg2->c_str(), &root) == 0);
    CHECK(cgroup_id_of(42, dir.path) == root.st_ino);

    dir.write("42/cgroup", "4:memory:/elsewhere\n1:cpu:/\n");  // v1 only
    CHECK(cgroup_id_of(42, dir.path) == 0);
    dir.write("42/cgroup", "0::/no/such/cgroup/scantrace\n");
    CHECK(cgroup_id_of(42, dir.path) == 0);

    CHECK(cgroup_id_of(static_cast<std::uint32_t>(getpid())) != 0);
}

TEST_CASE("scan_listening finds this process's own sockets") {
    Socket tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(tcp.fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(tcp.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(listen(tcp.fd, 4) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(getsockname(tcp.fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    const std::uint16_t tcp_port = ntohs(sa.sin_port);
    const std::uint64_t tcp_inode = inode_of(tcp.fd);

    Socket udp(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    REQUIRE(udp.fd >= 0);
    sa.sin_port = 0;
    REQUIRE(bind(udp.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    const std::uint64_t udp_inode = inode_of(udp.fd);

    // A connected UDP socket and a bound-but-not-listening TCP socket are
    // not listeners.
    Socket udp_conn(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    REQUIRE(udp_conn.fd >= 0);
    sockaddr_in peer = sa;
    peer.sin_port = htons(9);
    REQUIRE(connect(udp_conn.fd, reinterpret_cast<sockaddr*>(&peer), sizeof peer) == 0);
    const std::uint64_t udp_conn_inode = inode_of(udp_conn.fd);
    Socket tcp_bound(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(tcp_bound.fd >= 0);
    sa.sin_port = 0;
    REQUIRE(bind(tcp_bound.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    const std::uint64_t tcp_bound_inode = inode_of(tcp_bound.fd);

    const auto me = static_cast<std::uint32_t>(getpid());
    const std::uint32_t my_ns = netns_of(me);
    const std::vector<ListeningSocket> all = scan_listening();

    auto find = [&](std::uint64_t inode) -> const ListeningSocket* {
        auto it = std::find_if(all.begin(), all.end(), [&](const ListeningSocket& l) { return l.sock.inode == inode; });
        return it == all.end() ? nullptr : &*it;
    };

    const ListeningSocket* t = find(tcp_inode);
    REQUIRE(t != nullptr);
    CHECK(t->sock.proto == 6);
    CHECK(t->sock.state == 10);
    CHECK(t->sock.laddr == IpAddr::v4(127, 0, 0, 1));
    CHECK(t->sock.lport == tcp_port);
    CHECK(t->netns == my_ns);
    REQUIRE(t->owner.has_value());
    CHECK(t->owner->pid == me);
    CHECK(t->owner->uid == getuid());
    std::string comm = read_all("/proc/self/comm");
    if (!comm.empty() && comm.back() == '\n')
        comm.pop_back();
    CHECK(t->owner->comm == comm);
    CHECK(t->owner->cgroup_id == cgroup_id_of(me));

    const ListeningSocket* u = find(udp_inode);
    REQUIRE(u != nullptr);
    CHECK(u->sock.proto == 17);
    CHECK(u->sock.lport != 0);
    CHECK(u->netns == my_ns);
    REQUIRE(u->owner.has_value());
    CHECK(u->owner->pid == me);

    CHECK(find(udp_conn_inode) == nullptr);
    CHECK(find(tcp_bound_inode) == nullptr);

    for (const ListeningSocket& l : all) {
        if (l.sock.proto == 6) {
            CHECK(l.sock.state == 10);
        } else {
            CHECK(l.sock.rport == 0);
            CHECK(l.sock.raddr.is_unspecified());
            CHECK(l.sock.lport != 0);
        }
        CHECK(l.netns != 0);
    }
}

TEST_CASE("scan_listening on a missing proc root is empty, not an error") {
    CHECK(scan_listening("/nonexistent/proc").empty());
}
