// ScanTracker and make_scan_report over a fake source table: what the
// userspace side makes of the kernel's alerts and aggregates.
#include <doctest/doctest.h>
#include <scantrace/events.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "detect/portset_estimate.h"
#include "detect/scan_tracker.h"

using namespace scantrace;

namespace {

constexpr std::uint64_t kSec = 1'000'000'000ULL;

// The kernel's st_sources map, in memory.
struct FakeTable {
    std::map<st_src_key, st_src_val, SrcKeyLess> rows;
    std::vector<st_src_key> removed;
    int reads = 0;

    ScanTracker::Reader reader() {
        return [this](const st_src_key& k) -> std::optional<st_src_val> {
            ++reads;
            auto it = rows.find(k);
            if (it == rows.end()) return std::nullopt;
            return it->second;
        };
    }
    ScanTracker::Remover remover() {
        return [this](const st_src_key& k) {
            removed.push_back(k);
            rows.erase(k);
        };
    }
};

st_src_key v4_key(std::uint8_t last, std::uint32_t netns = 4026531840u) {
    st_src_key k{};
    k.netns = netns;
    k.family = ST_AF_INET;
    const std::uint8_t a[4] = {192, 0, 2, last};
    std::memcpy(k.addr, a, 4);
    return k;
}

st_src_key v6_key(std::uint8_t last) {
    st_src_key k{};
    k.netns = 4026531840u;
    k.family = ST_AF_INET6;
    const std::uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last};
    std::memcpy(k.addr, a, 16);
    return k;
}

// A source that probed ports first_port.. (n of them, all new) between
// first and last, with SYN probes against closed ports.
st_src_val source(std::uint64_t first_ns, std::uint64_t last_ns, unsigned n, std::uint16_t first_port = 1000) {
    st_src_val v{};
    v.first_ns = first_ns;
    v.last_ns = last_ns;
    for (unsigned i = 0; i < n; ++i) portset_insert(v, static_cast<std::uint16_t>(first_port + i));
    v.probes = n;
    v.tech_count[ST_TECH_SYN] = static_cast<__u16>(n);
    v.outcomes = 1u << ST_OUT_CLOSED;
    v.dst_family = ST_AF_INET;
    const std::uint8_t d[4] = {198, 51, 100, 7};
    std::memcpy(v.dst_addr, d, 4);
    return v;
}

void add_ports(st_src_val& v, unsigned n, std::uint16_t first_port, std::uint64_t now) {
    for (unsigned i = 0; i < n; ++i) portset_insert(v, static_cast<std::uint16_t>(first_port + i));
    v.probes += n;
    v.last_ns = now;
}

bool same_key(const st_src_key& a, const st_src_key& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

TEST_CASE("scan tracker: an alert starts a scan, reported once") {
    FakeTable t;
    ScanPolicy pol;
    pol.fast_threshold = 25;
    pol.fast_window_s = 7;
    pol.slow_threshold = 70;
    pol.slow_window_s = 600;
    ScanTracker tr(pol, t.reader(), t.remover());
    const auto k = v4_key(10);
    t.rows[k] = source(100 * kSec, 101 * kSec, 30);

    auto r = tr.on_alert(k, ST_RULE_FAST, 101 * kSec);
    REQUIRE(r);
    CHECK(r->phase == ScanPhase::start);
    CHECK(r->rule == "fast");
    CHECK(r->threshold == 25);
    CHECK(r->window_s == doctest::Approx(7));
    CHECK(r->source.to_string() == "192.0.2.10");
    CHECK(r->source_prefix == 32);
    CHECK(r->destination.to_string() == "198.51.100.7");
    CHECK(r->ports == 30);
    CHECK(r->ports_exact);
    CHECK(r->probes == 30);
    CHECK(r->first_ns == 100 * kSec);
    CHECK(r->last_ns == 101 * kSec);
    CHECK(tr.active() == 1);

    // The same source crossing again soon after: nothing new to say yet.
    CHECK_FALSE(tr.on_alert(k, ST_RULE_FAST, 102 * kSec));
    CHECK_FALSE(tr.on_alert(k, ST_RULE_SLOW, 103 * kSec));
    CHECK(tr.active() == 1);

    // A slow-rule start carries the slow policy.
    const auto k2 = v4_key(11);
    t.rows[k2] = source(0, 500 * kSec, 70);
    auto s = tr.on_alert(k2, ST_RULE_SLOW, 500 * kSec);
    REQUIRE(s);
    CHECK(s->phase == ScanPhase::start);
    CHECK(s->rule == "slow");
    CHECK(s->threshold == 70);
    CHECK(s->window_s == doctest::Approx(600));
    CHECK_FALSE(s->ports_exact);
    CHECK(tr.active() == 2);

    // An alert whose source is already gone from the table says nothing.
    CHECK_FALSE(tr.on_alert(v4_key(12), ST_RULE_FAST, 500 * kSec));
    CHECK(tr.active() == 2);
}

TEST_CASE("scan tracker: a later alert is progress after progress_interval") {
    FakeTable t;
    ScanPolicy pol;
    pol.progress_interval_s = 5;
    ScanTracker tr(pol, t.reader(), t.remover());
    const auto k = v4_key(20);
    t.rows[k] = source(10 * kSec, 10 * kSec, 20);
    REQUIRE(tr.on_alert(k, ST_RULE_FAST, 10 * kSec));

    add_ports(t.rows[k], 20, 2000, 14 * kSec);
    CHECK_FALSE(tr.on_alert(k, ST_RULE_FAST, 14 * kSec));  // 4 s < 5 s

    add_ports(t.rows[k], 20, 3000, 15 * kSec);
    auto p = tr.on_alert(k, ST_RULE_SLOW, 15 * kSec);  // 5 s: due
    REQUIRE(p);
    CHECK(p->phase == ScanPhase::progress);
    CHECK(p->rule == "slow");
    CHECK(p->ports == 60);
    CHECK(p->last_ns == 15 * kSec);

    // The interval restarts from the progress report.
    CHECK_FALSE(tr.on_alert(k, ST_RULE_FAST, 19 * kSec));
    CHECK(tr.on_alert(k, ST_RULE_FAST, 20 * kSec));
}

TEST_CASE("scan tracker: tick reports progress only when the port count grew") {
    FakeTable t;
    ScanPolicy pol;
    pol.progress_interval_s = 5;
    pol.quiet_s = 30;
    ScanTracker tr(pol, t.reader(), t.remover());
    const auto k = v4_key(30);
    t.rows[k] = source(0, 1 * kSec, 25);
    REQUIRE(tr.on_alert(k, ST_RULE_FAST, 1 * kSec));

    // Probing continues but only repeats known ports: the interval has
    // elapsed, yet there is no progress to report.
    t.rows[k].probes += 100;
    t.rows[k].last_ns = 6 * kSec;
    CHECK(tr.tick(6 * kSec).empty());

    // New ports and the interval elapsed: one progress, with the rule kept.
    add_ports(t.rows[k], 10, 6000, 8 * kSec);
    auto out = tr.tick(8 * kSec);
    REQUIRE(out.size() == 1);
    CHECK(out[0].phase == ScanPhase::progress);
    CHECK(out[0].rule == "fast");
    CHECK(out[0].ports == 35);
    CHECK(out[0].probes == 135);

    // New ports, but too soon after that report: nothing.
    add_ports(t.rows[k], 5, 7000, 9 * kSec);
    CHECK(tr.tick(9 * kSec).empty());
    // Interval elapsed, ports grew since the last progress: report again.
    out = tr.tick(13 * kSec);
    REQUIRE(out.size() == 1);
    CHECK(out[0].ports == 40);
    // Interval elapsed again, no growth: nothing.
    CHECK(tr.tick(19 * kSec).empty());
    CHECK(tr.active() == 1);
    CHECK(t.removed.empty());
}

TEST_CASE("scan tracker: quiet sources end and leave the table") {
    FakeTable t;
    ScanPolicy pol;
    pol.quiet_s = 30;
    ScanTracker tr(pol, t.reader(), t.remover());
    const auto k = v4_key(40);
    t.rows[k] = source(0, 10 * kSec, 25);
    REQUIRE(tr.on_alert(k, ST_RULE_FAST, 10 * kSec));

    CHECK(tr.tick(39 * kSec).empty());  // 29 s quiet
    auto out = tr.tick(40 * kSec);      // 30 s quiet
    REQUIRE(out.size() == 1);
    CHECK(out[0].phase == ScanPhase::end);
    CHECK(out[0].rule == "quiet");
    CHECK(out[0].ports == 25);
    CHECK(out[0].last_ns == 10 * kSec);
    REQUIRE(t.removed.size() == 1);
    CHECK(same_key(t.removed[0], k));
    CHECK(tr.removed() == 1);
    CHECK(tr.active() == 0);
    CHECK(tr.tick(100 * kSec).empty());

    // The source comes back later: a new scan start.
    t.rows[k] = source(200 * kSec, 201 * kSec, 30);
    auto again = tr.on_alert(k, ST_RULE_FAST, 201 * kSec);
    REQUIRE(again);
    CHECK(again->phase == ScanPhase::start);
}

TEST_CASE("scan tracker: a vanished entry ends as evicted, a restarted one as restarted") {
    FakeTable t;
    ScanTracker tr(ScanPolicy{}, t.reader(), t.remover());
    const auto gone = v4_key(50), restarted = v4_key(51), steady = v4_key(52);
    t.rows[gone] = source(0, 1 * kSec, 22, 100);
    t.rows[restarted] = source(0, 1 * kSec, 23, 200);
    t.rows[steady] = source(0, 1 * kSec, 24, 300);
    for (const auto& k : {gone, restarted, steady}) REQUIRE(tr.on_alert(k, ST_RULE_FAST, 1 * kSec));

    add_ports(t.rows[gone], 3, 9000, 2 * kSec);
    CHECK(tr.tick(2 * kSec).empty());  // the tracker saw 25 ports for `gone`

    t.rows.erase(gone);                                    // LRU eviction
    t.rows[restarted] = source(3 * kSec, 3 * kSec, 1, 7);  // a new episode: first_ns moved
    auto out = tr.tick(3 * kSec);
    REQUIRE(out.size() == 2);
    std::map<std::string, ScanReport> by_why;
    for (auto& r : out) {
        CHECK(r.phase == ScanPhase::end);
        by_why[r.rule] = r;
    }
    REQUIRE(by_why.count("evicted"));
    REQUIRE(by_why.count("restarted"));
    // Both end with the last aggregate the tracker had, not the new episode.
    CHECK(by_why["evicted"].source.to_string() == "192.0.2.50");
    CHECK(by_why["evicted"].ports == 25);
    CHECK(by_why["evicted"].last_ns == 2 * kSec);
    CHECK(by_why["restarted"].source.to_string() == "192.0.2.51");
    CHECK(by_why["restarted"].ports == 23);
    CHECK(by_why["restarted"].first_ns == 0);
    // Nothing was removed from the kernel: the entries are gone or reused.
    CHECK(t.removed.empty());
    CHECK(tr.removed() == 0);
    CHECK(tr.active() == 1);
}

TEST_CASE("scan tracker: finish ends every active scan with shutdown") {
    FakeTable t;
    ScanTracker tr(ScanPolicy{}, t.reader(), t.remover());
    const auto a = v4_key(60), b = v6_key(61);
    t.rows[a] = source(0, 1 * kSec, 21);
    t.rows[b] = source(0, 1 * kSec, 22);
    REQUIRE(tr.on_alert(a, ST_RULE_FAST, 1 * kSec));
    REQUIRE(tr.on_alert(b, ST_RULE_FAST, 1 * kSec));
    add_ports(t.rows[a], 4, 8000, 2 * kSec);
    t.rows.erase(b);  // gone by shutdown: its last known aggregate ends it

    auto out = tr.finish();
    REQUIRE(out.size() == 2);
    for (const auto& r : out) {
        CHECK(r.phase == ScanPhase::end);
        CHECK(r.rule == "shutdown");
        if (r.source.family == Family::v4)
            CHECK(r.ports == 25);  // re-read at shutdown
        else
            CHECK(r.ports == 22);
    }
    CHECK(tr.active() == 0);
    CHECK(tr.finish().empty());
    CHECK(t.removed.empty());
}

TEST_CASE("make_scan_report: techniques, addresses, outcomes, ports") {
    ScanPolicy pol;
    st_src_val v{};
    v.first_ns = 5;
    v.last_ns = 9;
    v.probes = 77;
    v.tech_count[ST_TECH_SYN] = 3;
    v.tech_count[ST_TECH_FIN] = 40;
    v.tech_count[ST_TECH_XMAS] = 3;
    v.tech_count[ST_TECH_UDP] = 31;
    v.tech_count[ST_TECH_OTHER] = 0xffff;  // saturated
    v.outcomes = (1u << ST_OUT_CLOSED) | (1u << ST_OUT_DROPPED) | (1u << ST_OUT_RESET) | 0x80;
    const std::uint16_t open[] = {22, 80, 443};
    std::memcpy(v.open_ports, open, sizeof open);
    v.n_open = 3;
    for (std::uint16_t p = 1; p <= 40; ++p) portset_insert(v, p);
    v.dst_family = ST_AF_INET6;
    const std::uint8_t mapped_dst[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
    std::memcpy(v.dst_addr, mapped_dst, 16);

    SUBCASE("sorted techniques, outcome names, open ports, samples") {
        const auto r = make_scan_report(v4_key(1), v, ScanPhase::progress, pol);
        CHECK(r.phase == ScanPhase::progress);
        REQUIRE(r.techniques.size() == 5);
        CHECK(r.techniques[0] == std::pair<std::string, std::uint32_t>{"other", 0xffff});
        CHECK(r.techniques[1] == std::pair<std::string, std::uint32_t>{"fin", 40});
        CHECK(r.techniques[2] == std::pair<std::string, std::uint32_t>{"udp", 31});
        // Ties keep enum order.
        CHECK(r.techniques[3] == std::pair<std::string, std::uint32_t>{"syn", 3});
        CHECK(r.techniques[4] == std::pair<std::string, std::uint32_t>{"xmas", 3});
        // Only the four defined outcome bits are named.
        CHECK(r.outcomes == std::vector<std::string>{"closed", "dropped", "reset"});
        CHECK(r.open_ports == std::vector<std::uint16_t>{22, 80, 443});
        CHECK(r.ports == 40);
        CHECK(r.ports_exact);
        CHECK(r.probes == 77);
        CHECK(r.first_ns == 5);
        CHECK(r.last_ns == 9);
        REQUIRE(r.sample_ports.size() == 32);  // capped
        CHECK(r.sample_ports.front() == 1);
        CHECK(r.sample_ports.back() == 32);
        // A v4-mapped destination prints as IPv4.
        CHECK(r.destination.family == Family::v4);
        CHECK(r.destination.to_string() == "10.1.2.3");
        CHECK(r.netns == 4026531840u);
    }

    SUBCASE("n_open beyond the array is clamped") {
        v.n_open = 200;
        const auto r = make_scan_report(v4_key(1), v, ScanPhase::start, pol);
        CHECK(r.open_ports.size() == ST_OPEN_PORTS);
    }

    SUBCASE("IPv4 and IPv4-mapped sources") {
        const auto r4 = make_scan_report(v4_key(99), v, ScanPhase::start, pol);
        CHECK(r4.source.family == Family::v4);
        CHECK(r4.source.to_string() == "192.0.2.99");
        CHECK(r4.source_prefix == 32);

        st_src_key mk{};
        mk.family = ST_AF_INET6;
        std::memcpy(mk.addr, mapped_dst, 16);
        const auto rm = make_scan_report(mk, v, ScanPhase::start, pol);
        CHECK(rm.source.family == Family::v4);
        CHECK(rm.source.to_string() == "10.1.2.3");
        CHECK(rm.source_prefix == 32);
    }

    SUBCASE("IPv6 sources: /128, or /64 when grouped") {
        const auto full = make_scan_report(v6_key(5), v, ScanPhase::start, pol);
        CHECK(full.source.to_string() == "2001:db8::5");
        CHECK(full.source_prefix == 128);

        pol.group_v6_64 = true;
        st_src_key grouped = v6_key(0);  // the kernel zeroes the low 64 bits
        const auto g = make_scan_report(grouped, v, ScanPhase::start, pol);
        CHECK(g.source.to_string() == "2001:db8::");
        CHECK(g.source_prefix == 64);
        // Grouping never changes how an IPv4 source is described.
        CHECK(make_scan_report(v4_key(1), v, ScanPhase::start, pol).source_prefix == 32);
    }

    SUBCASE("past 64 ports the count is an estimate") {
        for (unsigned p = 1000; p < 1500; ++p) portset_insert(v, static_cast<std::uint16_t>(p));
        const auto r = make_scan_report(v4_key(1), v, ScanPhase::start, pol);
        CHECK_FALSE(r.ports_exact);
        CHECK(r.ports >= 500);
        CHECK(r.ports <= 600);
        CHECK(r.sample_ports.size() == 32);
    }
}

TEST_CASE("technique and outcome names") {
    const char* tech[] = {"syn", "connect", "fin", "null", "xmas", "ack", "maimon", "udp", "other"};
    for (unsigned t = 0; t < ST_TECH_MAX; ++t) CHECK(std::string(technique_name(t)) == tech[t]);
    CHECK(std::string(technique_name(ST_TECH_MAX)) == "other");
    CHECK(std::string(technique_name(255)) == "other");
    CHECK(std::string(outcome_name(ST_OUT_CLOSED)) == "closed");
    CHECK(std::string(outcome_name(ST_OUT_OPEN)) == "open");
    CHECK(std::string(outcome_name(ST_OUT_DROPPED)) == "dropped");
    CHECK(std::string(outcome_name(ST_OUT_RESET)) == "reset");
}

// BUG (reported, product unchanged): on_alert() rate-limits progress with
// `now_ns - last_report_ns` in unsigned arithmetic, and is called with the
// alert's kernel timestamp while tick() uses the userspace clock. An alert
// stamped just before a tick that reported progress, but read after it,
// wraps to ~2^64 and bypasses progress_interval: two progress records
// microseconds apart.
TEST_CASE("scan tracker: an alert older than the last progress is rate-limited") {
    FakeTable t;
    ScanPolicy pol;
    pol.progress_interval_s = 5;
    ScanTracker tr(pol, t.reader(), t.remover());
    const auto k = v4_key(70);
    t.rows[k] = source(0, 1 * kSec, 25);
    REQUIRE(tr.on_alert(k, ST_RULE_FAST, 1 * kSec));
    add_ports(t.rows[k], 10, 4000, 8 * kSec);
    REQUIRE(tr.tick(8 * kSec).size() == 1);  // progress at 8 s
    add_ports(t.rows[k], 10, 5000, 8 * kSec);
    CHECK_FALSE(tr.on_alert(k, ST_RULE_FAST, 8 * kSec - 1000));  // stamped 1 us before the tick
}
