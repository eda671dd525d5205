#include <doctest/doctest.h>

#include "util/tcp_states.h"

using namespace scantrace;

TEST_CASE("tcp state names match netstat") {
    const char* expected[] = {"",          "ESTABLISHED", "SYN_SENT",     "SYN_RECV",      "FIN_WAIT1",
                              "FIN_WAIT2", "TIME_WAIT",   "CLOSE",        "CLOSE_WAIT",    "LAST_ACK",
                              "LISTEN",    "CLOSING",     "NEW_SYN_RECV", "BOUND_INACTIVE"};
    for (unsigned s = 1; s <= 13; ++s)
        CHECK(tcp_state_name(s) == expected[s]);
}

TEST_CASE("unknown tcp states print as numbers") {
    CHECK(tcp_state_name(0) == "0");
    CHECK(tcp_state_name(14) == "14");
    CHECK(tcp_state_name(255) == "255");
    CHECK(tcp_state_name(100000) == "100000");
    CHECK(tcp_state_name(4294967295u) == "4294967295");
}

TEST_CASE("parse_tcp_state is the inverse") {
    for (unsigned s : {0u, 1u, 2u, 7u, 10u, 12u, 13u, 14u, 255u, 100000u}) {
        auto back = parse_tcp_state(tcp_state_name(s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    CHECK(parse_tcp_state("listen") == 10u);
    CHECK(parse_tcp_state("Syn_Recv") == 3u);
    CHECK(parse_tcp_state("time_wait") == 6u);
    CHECK(parse_tcp_state("42") == 42u);

    for (const char* bad : {"", "LISTENING", "LISTEN ", " 10", "10x", "-1", "0x0a", "SYN-SENT", "4294967296"})
        CHECK_MESSAGE(!parse_tcp_state(bad), bad);
}
