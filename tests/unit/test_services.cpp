#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "util/services.h"

using namespace scantrace;

namespace {

constexpr std::uint8_t kTcp = 6;
constexpr std::uint8_t kUdp = 17;

constexpr const char* kSample = R"(# Network services, Internet style
#
tcpmux		1/tcp				# TCP port service multiplexer
echo		7/tcp
echo		7/udp
ssh		22/tcp				# SSH Remote Login Protocol
domain		53/tcp
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
www-alt		80/tcp				# a later duplicate: the first line wins
kerberos	88/tcp		kerberos5 krb5 kerberos-sec	# Kerberos v5
kerberos	88/udp		kerberos5 krb5 kerberos-sec	# Kerberos v5
sctp-only	9/sctp
broken		notaport/tcp
toolarge	70000/tcp
noproto		81
 spaced   443/tcp   https
syslog		514/udp
shell		514/tcp		cmd		# no passwords used
#commented	99/tcp
trailing	1234/tcp# comment glued to the entry
)";

}  // namespace

TEST_CASE("services: parse the services(5) format") {
    const ServiceTable t = ServiceTable::parse(kSample);
    CHECK(t.lookup(1, kTcp) == "tcpmux");
    CHECK(t.lookup(22, kTcp) == "ssh");
    CHECK(!t.lookup(22, kUdp));
    CHECK(t.lookup(53, kUdp) == "domain");
    CHECK(t.lookup(80, kTcp) == "http");  // aliases ignored, first entry wins
    CHECK(t.lookup(88, kTcp) == "kerberos");
    CHECK(t.lookup(443, kTcp) == "spaced");
    CHECK(t.lookup(1234, kTcp) == "trailing");
    // Same port, different names per protocol.
    CHECK(t.lookup(514, kUdp) == "syslog");
    CHECK(t.lookup(514, kTcp) == "shell");
    // Rejected lines.
    CHECK(!t.lookup(9, kTcp));
    CHECK(!t.lookup(9, kUdp));
    CHECK(!t.lookup(99, kTcp));
    CHECK(!t.lookup(81, kTcp));
    CHECK(!t.lookup(70000 & 0xffff, kTcp));
    CHECK(!t.lookup(80, 1));
    CHECK(t.size() == 13);
}

TEST_CASE("services: empty and odd input") {
    CHECK(ServiceTable::parse("").size() == 0);
    CHECK(ServiceTable::parse("\n\n# only comments\n   \n").size() == 0);
    const ServiceTable t = ServiceTable::parse("ftp 21/tcp");  // no final newline
    CHECK(t.lookup(21, kTcp) == "ftp");
    const ServiceTable crlf = ServiceTable::parse("ftp 21/tcp\r\nssh 22/tcp\r\n");
    CHECK(crlf.lookup(21, kTcp) == "ftp");
    CHECK(crlf.lookup(22, kTcp) == "ssh");
}

TEST_CASE("services: load from a file, missing file gives an empty table") {
    CHECK(ServiceTable::load("/nonexistent/scantrace/services").size() == 0);

    char path[] = "/tmp/scantrace-services-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const std::string text = kSample;
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    const ServiceTable t = ServiceTable::load(path);
    unlink(path);
    CHECK(t.size() == 13);
    CHECK(t.lookup(80, kTcp) == "http");
}

TEST_CASE("services: the system file, when there is one") {
    const ServiceTable t = ServiceTable::load();
    if (access("/etc/services", R_OK) == 0) {
        CHECK(t.size() > 0);
        CHECK(t.lookup(22, kTcp) == "ssh");
    } else {
        CHECK(t.size() == 0);
    }
}
