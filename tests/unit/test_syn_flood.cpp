// SynFloodMonitor on synthetic cumulative samples and a fake namespace reader.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <vector>

#include "detect/syn_flood.h"

using namespace scantrace;

namespace {

constexpr std::uint64_t kSec = 1'000'000'000ULL;
constexpr std::uint32_t kNs = 4026531840u;
constexpr std::uint16_t kPort = 8080;

// The namespace counters, as /proc would show them; the test moves them.
struct FakeNetns {
    std::map<std::uint32_t, NetnsTcpSample> ns;
    int reads = 0;

    SynFloodMonitor::NetnsReader reader() {
        return [this](std::uint32_t netns) -> std::optional<NetnsTcpSample> {
            ++reads;
            auto it = ns.find(netns);
            if (it == ns.end()) return std::nullopt;
            return it->second;
        };
    }
};

std::vector<SynSample> one(std::uint64_t syns, std::uint64_t synack = 0, std::uint16_t port = kPort) {
    return {SynSample{kNs, port, syns, synack}};
}

}  // namespace

TEST_CASE("syn flood: no report on the first tick, whatever the counts") {
    FakeNetns fn;
    fn.ns[kNs].half_open[kPort] = 1000;
    fn.ns[kNs].syncookies_sent = 1'000'000;
    SynFloodMonitor m(100, 64);
    CHECK(m.tick(1 * kSec, one(1'000'000, 50'000), fn.reader()).empty());
    CHECK(m.flooding() == 0);
}

TEST_CASE("syn flood: a SYN rate at the threshold with SYNs left half-open starts a flood") {
    FakeNetns fn;
    fn.ns[kNs];
    SynFloodMonitor m(100, 64);
    CHECK(m.tick(1 * kSec, one(10), fn.reader()).empty());
    CHECK(m.tick(2 * kSec, one(60), fn.reader()).empty());   // 50/s
    // A busy server: the rate, but every handshake completes.
    fn.ns[kNs].half_open[kPort] = 0;
    CHECK(m.tick(3 * kSec, one(260), fn.reader()).empty());  // 200/s, nothing half-open
    fn.ns[kNs].half_open[kPort] = 8;
    auto out = m.tick(4 * kSec, one(360, 15), fn.reader());  // 100/s, 8 half-open
    REQUIRE(out.size() == 1);
    CHECK_FALSE(out[0].ended);
    CHECK(out[0].netns == kNs);
    CHECK(out[0].port == kPort);
    CHECK(out[0].syn_rate == doctest::Approx(100));
    CHECK(out[0].synack_retransmits == doctest::Approx(15));
    CHECK_FALSE(out[0].syncookies);
    CHECK(m.flooding() == 1);
}

TEST_CASE("syn flood: half-open sockets at the threshold start a flood") {
    FakeNetns fn;
    fn.ns[kNs].half_open[kPort] = 10;
    fn.ns[kNs].half_open[9999] = 500;  // another port's backlog is not ours
    SynFloodMonitor m(1000, 64);
    CHECK(m.tick(1 * kSec, one(5), fn.reader()).empty());
    fn.ns[kNs].half_open[kPort] = 63;
    CHECK(m.tick(2 * kSec, one(10), fn.reader()).empty());
    fn.ns[kNs].half_open[kPort] = 64;
    auto out = m.tick(3 * kSec, one(15), fn.reader());
    REQUIRE(out.size() == 1);
    CHECK(out[0].half_open == 64);
    CHECK(out[0].syn_rate == doctest::Approx(5));
}

TEST_CASE("syn flood: SYN cookies while the port holds half-open connections start a flood") {
    FakeNetns fn;
    fn.ns[kNs].syncookies_sent = 100;
    fn.ns[kNs].listen_drops = 7;
    fn.ns[kNs].half_open[kPort] = 8;  // a small backlog: far below the threshold
    SynFloodMonitor m(1000, 64);
    // The first read is the baseline: its cumulative cookies are not "sent in
    // the interval".
    CHECK(m.tick(1 * kSec, one(5), fn.reader()).empty());
    CHECK(m.tick(2 * kSec, one(10), fn.reader()).empty());  // half-open, but no new cookies

    // Cookies with no half-open connection on this port: another port's queue.
    fn.ns[kNs].syncookies_sent = 150;
    fn.ns[kNs].half_open[kPort] = 0;
    CHECK(m.tick(3 * kSec, one(15), fn.reader()).empty());

    fn.ns[kNs].syncookies_sent = 250;
    fn.ns[kNs].listen_drops = 9;
    fn.ns[kNs].listen_overflows = 3;
    fn.ns[kNs].half_open[kPort] = 8;
    auto out = m.tick(4 * kSec, one(20), fn.reader());
    REQUIRE(out.size() == 1);
    CHECK(out[0].syncookies);
    CHECK(out[0].syncookies_sent == 100);
    CHECK(out[0].listen_drops == 2);
    CHECK(out[0].listen_overflows == 3);
    CHECK(out[0].half_open == 8);
}

TEST_CASE("syn flood: one start while flooding, one end after end_after_s of calm") {
    FakeNetns fn;
    fn.ns[kNs].half_open[kPort] = 0;
    SynFloodMonitor m(100, 64, /*end_after_s=*/5);
    std::uint64_t syns = 0;
    int starts = 0, ends = 0;
    std::optional<SynFloodReport> end;
    auto step = [&](std::uint64_t t, std::uint64_t rate, std::uint32_t half_open) {
        syns += rate;  // one-second ticks
        fn.ns[kNs].half_open[kPort] = half_open;
        for (const auto& r : m.tick(t * kSec, one(syns), fn.reader())) {
            if (r.ended) {
                ++ends;
                end = r;
            } else {
                ++starts;
            }
        }
    };
    step(1, 10, 0);
    step(2, 10, 0);
    step(3, 500, 10);  // flood starts
    CHECK(starts == 1);
    CHECK(m.flooding() == 1);
    step(4, 900, 20);  // peak rate
    step(5, 300, 90);  // peak half-open (and a flood by both signals)
    step(6, 200, 30);
    CHECK(starts == 1);  // never a second start while it lasts

    step(7, 10, 0);  // calm since 7
    step(8, 10, 0);
    step(9, 150, 0);  // a burst resets the calm period
    step(10, 10, 0);  // calm since 10
    step(11, 10, 0);
    step(12, 10, 0);
    step(13, 10, 0);
    step(14, 10, 0);
    CHECK(ends == 0);  // 4 s of calm
    step(15, 10, 0);   // 5 s of calm
    CHECK(ends == 1);
    REQUIRE(end);
    CHECK(end->port == kPort);
    CHECK(end->duration_s == doctest::Approx(12));  // 3 .. 15
    CHECK(end->peak_syn_rate == doctest::Approx(900));
    CHECK(end->peak_half_open == 90);
    CHECK(m.flooding() == 0);
    CHECK(starts == 1);

    // Later calm ticks say nothing; a new flood is a new start.
    step(16, 10, 0);
    step(17, 10, 0);
    CHECK(ends == 1);
    CHECK(starts == 1);
    step(18, 1000, 1);
    CHECK(starts == 2);
}

TEST_CASE("syn flood: a namespace is read for 10 s after its last SYN, then no more") {
    FakeNetns fn;
    fn.ns[kNs];
    SynFloodMonitor m(100, 64);
    m.tick(1 * kSec, one(10), fn.reader());
    CHECK(fn.reads == 1);
    // No new SYNs, but under SYN cookies the hook-visible count stalls while
    // a flood goes on: keep reading the kernel's counters for a while.
    m.tick(2 * kSec, one(10), fn.reader());
    m.tick(3 * kSec, one(10), fn.reader());
    CHECK(fn.reads == 3);
    m.tick(12 * kSec, one(10), fn.reader());  // 11 s since the last new SYN
    CHECK(fn.reads == 3);
    m.tick(13 * kSec, one(11), fn.reader());
    CHECK(fn.reads == 4);
}

TEST_CASE("syn flood: without a readable namespace a SYN rate alone is no flood") {
    FakeNetns fn;  // no namespace at all: reader returns nullopt
    SynFloodMonitor m(100, 64);
    m.tick(1 * kSec, one(10), fn.reader());
    CHECK(m.tick(2 * kSec, one(1000), fn.reader()).empty());
    CHECK(m.flooding() == 0);
}

TEST_CASE("syn flood: ports are independent") {
    FakeNetns fn;
    fn.ns[kNs].half_open[80] = 1;
    fn.ns[kNs].half_open[443] = 1;
    fn.ns[kNs].half_open[22] = 1;
    SynFloodMonitor m(100, 64);
    auto both = [](std::uint64_t a, std::uint64_t b) {
        return std::vector<SynSample>{{kNs, 80, a, 0}, {kNs, 443, b, 0}};
    };
    m.tick(1 * kSec, both(10, 10), fn.reader());
    auto out = m.tick(2 * kSec, both(20, 5000), fn.reader());
    REQUIRE(out.size() == 1);
    CHECK(out[0].port == 443);
    CHECK(m.flooding() == 1);
    // A port first seen mid-run has no rate yet, however large its count.
    out = m.tick(3 * kSec, {{kNs, 80, 30, 0}, {kNs, 443, 5010, 0}, {kNs, 22, 1'000'000, 0}}, fn.reader());
    CHECK(out.empty());
}
