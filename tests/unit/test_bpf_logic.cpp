// The kernel-side decision logic (bpf/scan.bpf.h) on the real verifier:
// bpf/logic_test.bpf.c wraps it in SEC("syscall") programs (st_record_probe
// in a raw_tp one, see there), run here with BPF_PROG_TEST_RUN and compared
// with the userspace twins. Needs root (CAP_BPF); skipped otherwise, so the
// unit tests still pass unprivileged.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <doctest/doctest.h>
#include <scantrace/events.h>
#include <scantrace/portset.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "detect/portset_estimate.h"
#include "events/decode.h"
#include "logic_test.skel.h"
#include "util/netaddr.h"

using namespace scantrace;

namespace {

// Must match bpf/logic_test.bpf.c.
constexpr std::size_t kBatch = 4096;

struct TechniqueCtx {
    __u8 flags, doff, technique, _pad;
};
struct PortsetCtx {
    __u32 n, inserted;
    __s32 err;
    __u32 _pad;
};
struct ProbeCtx {
    __u64 now;
    __u32 netns;
    __u16 family, dport;
    __u8 saddr[16], daddr[16];
    __u8 technique, outcome, create, _pad[5];
};
static_assert(sizeof(TechniqueCtx) == 4 && sizeof(PortsetCtx) == 16 && sizeof(ProbeCtx) == 56);

constexpr std::uint64_t kSec = 1'000'000'000ULL, kMs = 1'000'000ULL;

// libbpf's log, kept so that a load failure shows the verifier's reasons.
std::string g_libbpf_log;
int capture_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
    if (level == LIBBPF_DEBUG) return 0;
    char buf[4096];
    const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    g_libbpf_log.append(buf, n > 0 ? std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1) : 0);
    return n;
}

bool have_root() {
    return geteuid() == 0;
}

using Skel = std::unique_ptr<logic_test_bpf, decltype(&logic_test_bpf__destroy)>;

struct Policy {
    std::uint64_t fast_window_ns = 10 * kSec;
    std::uint32_t fast_threshold = 20;
    std::uint64_t slow_window_ns = 900 * kSec;
    std::uint32_t slow_threshold = 60;
    std::uint64_t dist_window_ns = 10 * kSec;
    std::uint32_t dist_sources = 30, dist_ports = 10;
    bool group_v6_64 = false;
    bool have_ignores = false;
};

// Open, configure, load: the lifecycle scantrace uses, rodata before load.
Skel load(const Policy& pol = {}) {
    Skel skel(logic_test_bpf__open(), logic_test_bpf__destroy);
    REQUIRE_MESSAGE(skel, "logic_test_bpf__open: " << std::string(std::strerror(errno)));
    skel->rodata->cfg_fast_window_ns = pol.fast_window_ns;
    skel->rodata->cfg_fast_threshold = pol.fast_threshold;
    skel->rodata->cfg_slow_window_ns = pol.slow_window_ns;
    skel->rodata->cfg_slow_threshold = pol.slow_threshold;
    skel->rodata->cfg_dist_window_ns = pol.dist_window_ns;
    skel->rodata->cfg_dist_sources = pol.dist_sources;
    skel->rodata->cfg_dist_ports = pol.dist_ports;
    skel->rodata->cfg_group_v6_64 = pol.group_v6_64;
    skel->rodata->cfg_have_ignores = pol.have_ignores;
    g_libbpf_log.clear();
    const auto old = libbpf_set_print(capture_print);
    const int err = logic_test_bpf__load(skel.get());
    libbpf_set_print(old);
    REQUIRE_MESSAGE(err == 0, "logic_test_bpf__load: " << std::string(std::strerror(-err)) << "\n" << g_libbpf_log);
    return skel;
}

template <typename Ctx>
void run(bpf_program* prog, Ctx& ctx) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
    const int err = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
    REQUIRE_MESSAGE(err == 0,
                    "bpf_prog_test_run_opts(" << bpf_program__name(prog) << "): " << std::string(std::strerror(errno)));
    REQUIRE(opts.retval == 0);
}

// The technique table, restated from its specification rather than from the
// kernel code. Only the six classic flag bits count (ECE/CWR are ignored: an
// OS connect() with ECN sends SYN|ECE|CWR). "SYN" means SYN without ACK, RST
// or FIN; PSH and URG do not change a SYN's meaning.
std::uint8_t expected_technique(std::uint8_t flags, std::uint8_t doff) {
    const bool fin = flags & 0x01, syn = flags & 0x02, rst = flags & 0x04, psh = flags & 0x08, ack = flags & 0x10,
               urg = flags & 0x20;
    if (syn && !ack && !rst && !fin) return doff > 6 ? ST_TECH_CONNECT : ST_TECH_SYN;
    if (!fin && !syn && !rst && !psh && !ack && !urg) return ST_TECH_NULL;
    if (fin && !syn && !rst && !psh && !ack && !urg) return ST_TECH_FIN;
    if (fin && psh && urg && !syn && !rst && !ack) return ST_TECH_XMAS;
    if (ack && !syn && !fin && !rst) return ST_TECH_ACK;
    if (fin && ack && !syn && !rst) return ST_TECH_MAIMON;
    return ST_TECH_OTHER;
}

// Inserts ports into the kernel's port set, in batches; returns the per-port results.
std::vector<bool> kernel_insert(logic_test_bpf* skel, const std::vector<std::uint16_t>& ports) {
    std::vector<bool> out;
    for (std::size_t off = 0; off < ports.size(); off += kBatch) {
        const std::size_t n = std::min(kBatch, ports.size() - off);
        std::memcpy(skel->bss->st_t_ports, ports.data() + off, n * sizeof(std::uint16_t));
        std::memset(skel->bss->st_t_new, 0xAA, sizeof skel->bss->st_t_new);
        PortsetCtx ctx{static_cast<__u32>(n), 0, 0, 0};
        run(skel->progs.st_test_portset, ctx);
        REQUIRE(ctx.err == 0);
        std::size_t trues = 0;
        for (std::size_t i = 0; i < n; ++i) {
            REQUIRE(skel->bss->st_t_new[i] <= 1);
            out.push_back(skel->bss->st_t_new[i]);
            trues += skel->bss->st_t_new[i];
        }
        CHECK(ctx.inserted == trues);
    }
    return out;
}

st_src_val kernel_val(logic_test_bpf* skel) {
    st_src_val v{};
    const __u32 zero = 0;
    REQUIRE(bpf_map__lookup_elem(skel->maps.st_t_val, &zero, sizeof zero, &v, sizeof v, 0) == 0);
    return v;
}

void kernel_reset(logic_test_bpf* skel) {
    const st_src_val z{};
    const __u32 zero = 0;
    REQUIRE(bpf_map__update_elem(skel->maps.st_t_val, &zero, sizeof zero, &z, sizeof z, BPF_ANY) == 0);
}

// Same ports through both implementations: same answers, same bytes.
void compare_portset(logic_test_bpf* skel, const std::vector<std::uint16_t>& ports) {
    kernel_reset(skel);
    const std::vector<bool> k = kernel_insert(skel, ports);
    st_src_val u{};
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < ports.size(); ++i)
        if (portset_insert(u, ports[i]) != k[i] && mismatches++ < 5)
            CHECK_MESSAGE(false, "port #" << i << " = " << ports[i]);
    CHECK(mismatches == 0);
    const st_src_val kv = kernel_val(skel);
    CHECK(kv.n_exact == u.n_exact);
    CHECK(std::memcmp(kv.ports, u.ports, sizeof u.ports) == 0);
    CHECK(std::memcmp(kv.bm_a, u.bm_a, sizeof u.bm_a) == 0);
    CHECK(std::memcmp(kv.bm_b, u.bm_b, sizeof u.bm_b) == 0);
    CHECK(std::memcmp(&kv, &u, sizeof u) == 0);  // nothing else touched
    CHECK(estimate_ports(kv).value == estimate_ports(u).value);
}

// ---- st_record_probe driving -------------------------------------------

struct Alerts {
    std::vector<ScanAlert> scan;
    std::vector<DistAlert> dist;
    std::vector<std::string> errors;
};

int on_record(void* ctx, void* data, size_t size) {
    auto* a = static_cast<Alerts*>(ctx);
    const Event e = decode_record(data, size);
    if (const auto* s = std::get_if<ScanAlert>(&e))
        a->scan.push_back(*s);
    else if (const auto* d = std::get_if<DistAlert>(&e))
        a->dist.push_back(*d);
    else if (const auto* err = std::get_if<DecodeError>(&e))
        a->errors.push_back(err->what);
    else
        a->errors.push_back("unexpected record type");
    return 0;
}

struct ProbeRig {
    Skel skel;
    Alerts alerts;
    std::unique_ptr<ring_buffer, decltype(&ring_buffer__free)> rb{nullptr, ring_buffer__free};

    explicit ProbeRig(const Policy& pol) : skel(load(pol)) {
        rb.reset(ring_buffer__new(bpf_map__fd(skel->maps.st_events), on_record, &alerts, nullptr));
        REQUIRE(rb);
    }

    void probe(std::uint64_t now, const st_src_key& src, std::uint16_t dport, std::uint8_t technique = ST_TECH_SYN,
               std::uint8_t outcome = ST_OUT_CLOSED, bool create = true, std::uint16_t family = 0) {
        ProbeCtx c{};
        c.now = now;
        c.netns = src.netns;
        c.family = family ? family : src.family;
        c.dport = dport;
        std::memcpy(c.saddr, src.addr, 16);
        const std::uint8_t victim[4] = {198, 51, 100, 1};
        std::memcpy(c.daddr, victim, 4);
        c.technique = technique;
        c.outcome = outcome;
        c.create = create;
        run(skel->progs.st_test_record_probe, c);
    }

    // Alerts emitted since the last call.
    void drain() { REQUIRE(ring_buffer__consume(rb.get()) >= 0); }

    std::optional<st_src_val> source(const st_src_key& k) {
        st_src_val v{};
        if (bpf_map__lookup_elem(skel->maps.st_sources, &k, sizeof k, &v, sizeof v, 0) != 0) return std::nullopt;
        return v;
    }

    std::uint64_t counter(std::uint32_t idx) {
        const int ncpu = libbpf_num_possible_cpus();
        REQUIRE(ncpu > 0);
        std::vector<__u64> per_cpu(static_cast<std::size_t>(ncpu));
        REQUIRE(bpf_map__lookup_elem(skel->maps.st_counters, &idx, sizeof idx, per_cpu.data(),
                                     per_cpu.size() * sizeof(__u64), 0) == 0);
        std::uint64_t sum = 0;
        for (auto c : per_cpu) sum += c;
        return sum;
    }
};

st_src_key v4_src(std::uint8_t last, std::uint32_t netns = 1) {
    st_src_key k{};
    k.netns = netns;
    k.family = ST_AF_INET;
    const std::uint8_t a[4] = {192, 0, 2, last};
    std::memcpy(k.addr, a, 4);
    return k;
}

}  // namespace

TEST_CASE("bpf logic: the test object passes the verifier") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Skel skel = load();
    CHECK(bpf_program__fd(skel->progs.st_test_technique) >= 0);
    CHECK(bpf_program__fd(skel->progs.st_test_portset) >= 0);
    CHECK(bpf_program__fd(skel->progs.st_test_record_probe) >= 0);
    CHECK(bpf_program__type(skel->progs.st_test_technique) == BPF_PROG_TYPE_SYSCALL);
    CHECK(bpf_program__type(skel->progs.st_test_record_probe) == BPF_PROG_TYPE_RAW_TRACEPOINT);
    // With --ignore prefixes the LPM lookup is live code: it must verify too.
    Policy ign;
    ign.have_ignores = true;
    Skel with_ignores = load(ign);
    CHECK(bpf_program__fd(with_ignores->progs.st_test_record_probe) >= 0);
}

TEST_CASE("bpf logic: st_technique matches the technique table for every flags byte") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Skel skel = load();
    int mismatches = 0;
    for (unsigned flags = 0; flags < 256; ++flags) {
        for (unsigned doff : {0u, 1u, 5u, 6u, 7u, 8u, 10u, 15u, 16u, 255u}) {
            TechniqueCtx c{static_cast<__u8>(flags), static_cast<__u8>(doff), 0xEE, 0};
            run(skel->progs.st_test_technique, c);
            const auto want = expected_technique(static_cast<std::uint8_t>(flags), static_cast<std::uint8_t>(doff));
            if (c.technique != want && mismatches++ < 10)
                CHECK_MESSAGE(false, "flags=0x" << std::hex << flags << std::dec << " doff=" << doff << ": kernel "
                                                << int(c.technique) << ", table " << int(want));
            // The context round-trips: inputs untouched.
            CHECK(c.flags == flags);
            CHECK(c.doff == doff);
        }
    }
    CHECK(mismatches == 0);

    // The cases scanners actually send, spelled out.
    auto tech = [&](std::uint8_t flags, std::uint8_t doff) {
        TechniqueCtx c{flags, doff, 0xEE, 0};
        run(skel->progs.st_test_technique, c);
        return c.technique;
    };
    CHECK(tech(0x02, 6) == ST_TECH_SYN);       // nmap -sS: 24-byte header (MSS)
    CHECK(tech(0x02, 5) == ST_TECH_SYN);       // hping3 -S
    CHECK(tech(0x02, 10) == ST_TECH_CONNECT);  // Linux connect(): 40 bytes of options
    CHECK(tech(0xC2, 10) == ST_TECH_CONNECT);  // ... with ECN negotiation
    CHECK(tech(0x01, 5) == ST_TECH_FIN);       // -sF
    CHECK(tech(0x00, 5) == ST_TECH_NULL);      // -sN
    CHECK(tech(0x29, 5) == ST_TECH_XMAS);      // -sX
    CHECK(tech(0x10, 5) == ST_TECH_ACK);       // -sA / -sW
    CHECK(tech(0x11, 5) == ST_TECH_MAIMON);    // -sM
    CHECK(tech(0x12, 5) == ST_TECH_OTHER);     // SYN-ACK
    CHECK(tech(0x04, 5) == ST_TECH_OTHER);     // RST
    CHECK(tech(0x3f, 5) == ST_TECH_OTHER);     // everything
}

TEST_CASE("bpf logic: st_portset_insert matches the userspace twin") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Skel skel = load();
    std::mt19937 rng(1234);

    SUBCASE("first ports with repeats") {
        std::vector<std::uint16_t> ports;
        for (unsigned i = 0; i < 200; ++i) ports.push_back(static_cast<std::uint16_t>(1 + rng() % 90));
        compare_portset(skel.get(), ports);
        // Below 64 distinct ports the kernel's answers are exact.
        kernel_reset(skel.get());
        const auto k = kernel_insert(skel.get(), ports);
        std::set<std::uint16_t> seen;
        for (std::size_t i = 0; i < ports.size() && seen.size() < ST_PORTS_EXACT; ++i) {
            CHECK(k[i] == !seen.count(ports[i]));
            seen.insert(ports[i]);
        }
    }
    SUBCASE("a sequential sweep with retries") {
        std::vector<std::uint16_t> ports;
        for (unsigned p = 1; p <= 3000; ++p) {
            ports.push_back(static_cast<std::uint16_t>(p));
            if (p % 7 == 0) ports.push_back(static_cast<std::uint16_t>(p - 3));
        }
        compare_portset(skel.get(), ports);
    }
    SUBCASE("20,000 random probes") {
        std::vector<std::uint16_t> ports(20000);
        for (auto& p : ports) p = static_cast<std::uint16_t>(rng());
        compare_portset(skel.get(), ports);
    }
    SUBCASE("every port, twice") {
        std::vector<std::uint16_t> ports;
        for (unsigned r = 0; r < 2; ++r)
            for (unsigned p = 0; p < 65536; ++p) ports.push_back(static_cast<std::uint16_t>(p));
        compare_portset(skel.get(), ports);
        const st_src_val v = kernel_val(skel.get());
        CHECK(estimate_ports(v).value == 65536);
    }
    SUBCASE("an oversized batch is refused, not overrun") {
        PortsetCtx ctx{static_cast<__u32>(kBatch + 1), 0, 0, 0};
        run(skel->progs.st_test_portset, ctx);
        CHECK(ctx.err != 0);
    }
}

TEST_CASE("bpf logic: st_record_probe applies the fast and slow rules") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Policy pol;
    pol.fast_threshold = 5;
    pol.fast_window_ns = 2 * kSec;
    pol.slow_threshold = 12;
    pol.slow_window_ns = 60 * kSec;
    ProbeRig rig(pol);
    const st_src_key a = v4_src(1);
    const std::uint64_t t0 = 1000 * kSec;

    // Four new ports in the fast window: below the rule.
    for (std::uint16_t p = 1; p <= 4; ++p) rig.probe(t0 + p * 100 * kMs, a, p);
    rig.drain();
    CHECK(rig.alerts.scan.empty());
    // Repeats add probes, never ports.
    for (int i = 0; i < 10; ++i) rig.probe(t0 + 500 * kMs, a, 2);
    rig.drain();
    CHECK(rig.alerts.scan.empty());

    // The fifth distinct port crosses the fast rule: one alert.
    rig.probe(t0 + 600 * kMs, a, 5, ST_TECH_FIN);
    for (std::uint16_t p = 6; p <= 8; ++p) rig.probe(t0 + (600 + p) * kMs, a, p);
    rig.drain();
    REQUIRE(rig.alerts.scan.size() == 1);
    {
        const ScanAlert& s = rig.alerts.scan[0];
        CHECK(s.rule == ST_RULE_FAST);
        CHECK(s.distinct == 5);
        CHECK(s.dport == 5);
        CHECK(s.technique == ST_TECH_FIN);
        CHECK(s.ts_ns == t0 + 600 * kMs);
        CHECK(std::memcmp(&s.key, &a, sizeof a) == 0);
    }

    // The aggregate.
    auto v = rig.source(a);
    REQUIRE(v);
    CHECK(v->first_ns == t0 + 100 * kMs);
    CHECK(v->last_ns == t0 + 608 * kMs);
    CHECK(v->probes == 18);
    CHECK(v->n_exact == 8);
    CHECK(v->fast_new == 8);
    CHECK(v->slow_new == 8);
    CHECK(v->alerted == ST_RULE_FAST);
    CHECK(v->tech_count[ST_TECH_SYN] == 17);
    CHECK(v->tech_count[ST_TECH_FIN] == 1);
    CHECK(v->outcomes == (1u << ST_OUT_CLOSED));
    CHECK(v->dst_family == ST_AF_INET);
    CHECK(v->dst_addr[0] == 198);
    CHECK(estimate_ports(*v).value == 8);

    // The window is 2 s from its first probe (t0 + 0.1 s): a probe at exactly
    // 2 s later is still in it, and a known port never counts.
    rig.probe(t0 + 2100 * kMs, a, 3);
    v = rig.source(a);
    CHECK(v->fast_start_ms == 0);
    CHECK(v->alerted == ST_RULE_FAST);

    // Past it, a new fast window: counting restarts and the rule may fire again.
    rig.probe(t0 + 2200 * kMs, a, 9);
    v = rig.source(a);
    CHECK(v->fast_start_ms == 2100);
    CHECK(v->fast_new == 1);
    CHECK(v->slow_new == 9);
    CHECK((v->alerted & ST_RULE_FAST) == 0);
    for (std::uint16_t p = 10; p <= 13; ++p) rig.probe(t0 + (2200 + p) * kMs, a, p, ST_TECH_SYN, ST_OUT_OPEN);
    rig.drain();
    // Port 12 is the 12th new port of the slow window, port 13 the 5th of the
    // new fast window.
    REQUIRE(rig.alerts.scan.size() == 3);
    CHECK(rig.alerts.scan[1].rule == ST_RULE_SLOW);
    CHECK(rig.alerts.scan[1].distinct == 12);
    CHECK(rig.alerts.scan[1].dport == 12);
    CHECK(rig.alerts.scan[2].rule == ST_RULE_FAST);
    CHECK(rig.alerts.scan[2].distinct == 13);
    CHECK(rig.alerts.scan[2].dport == 13);
    v = rig.source(a);
    CHECK(v->alerted == (ST_RULE_FAST | ST_RULE_SLOW));
    CHECK(v->n_open == 4);
    CHECK(v->open_ports[0] == 10);
    CHECK(v->open_ports[3] == 13);
    CHECK(v->outcomes == ((1u << ST_OUT_CLOSED) | (1u << ST_OUT_OPEN)));

    // An IPv4-mapped prober is the same source.
    st_src_key mapped = a;
    std::memset(mapped.addr, 0, 16);
    mapped.addr[10] = mapped.addr[11] = 0xff;
    std::memcpy(mapped.addr + 12, a.addr, 4);
    const std::uint32_t before = rig.source(a)->probes;
    rig.probe(t0 + 3 * kSec, mapped, 14, ST_TECH_SYN, ST_OUT_CLOSED, true, ST_AF_INET6);
    CHECK(rig.source(a)->probes == before + 1);
    CHECK_FALSE(rig.source(mapped));

    // Idle for longer than the slow window: a new episode from scratch.
    const std::uint64_t t1 = t0 + 3 * kSec + pol.slow_window_ns + 1;
    rig.probe(t1, a, 7);
    v = rig.source(a);
    CHECK(v->first_ns == t1);
    CHECK(v->probes == 1);
    CHECK(v->n_exact == 1);
    CHECK(v->alerted == 0);
    CHECK(v->n_open == 0);

    rig.drain();
    CHECK(rig.alerts.scan.size() == 3);
    CHECK(rig.alerts.errors.empty());
    CHECK(rig.counter(ST_CNT_SRC_NEW) == 1);
    CHECK(rig.counter(ST_CNT_PROBES) == 26);
    CHECK(rig.counter(ST_CNT_RB_LOST) == 0);
}

TEST_CASE("bpf logic: st_record_probe only creates sources when allowed") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    ProbeRig rig(Policy{});
    const st_src_key b = v4_src(2);
    rig.probe(5 * kSec, b, 80, ST_TECH_ACK, ST_OUT_RESET, /*create=*/false);
    CHECK_FALSE(rig.source(b));
    CHECK(rig.counter(ST_CNT_SRC_NEW) == 0);
    rig.probe(6 * kSec, b, 80, ST_TECH_SYN, ST_OUT_CLOSED, /*create=*/true);
    REQUIRE(rig.source(b));
    // An existing source takes probes that may not create one.
    rig.probe(7 * kSec, b, 81, ST_TECH_ACK, ST_OUT_RESET, /*create=*/false);
    CHECK(rig.source(b)->probes == 2);
    CHECK(rig.source(b)->tech_count[ST_TECH_ACK] == 1);

    // IPv6 sources keep all 128 bits unless grouped.
    st_src_key v6{};
    v6.netns = 1;
    v6.family = ST_AF_INET6;
    const std::uint8_t a6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x42};
    std::memcpy(v6.addr, a6, 16);
    rig.probe(8 * kSec, v6, 22);
    REQUIRE(rig.source(v6));
}

TEST_CASE("bpf logic: IPv6 sources group per /64 when configured") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Policy pol;
    pol.group_v6_64 = true;
    pol.fast_threshold = 3;
    ProbeRig rig(pol);
    st_src_key k{};
    k.netns = 1;
    k.family = ST_AF_INET6;
    const std::uint8_t prefix[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1};
    std::memcpy(k.addr, prefix, 8);
    // Three addresses of one /64, one port each: one source, one alert.
    for (std::uint8_t i = 1; i <= 3; ++i) {
        st_src_key host = k;
        host.addr[15] = i;
        host.addr[8] = static_cast<std::uint8_t>(0x10 * i);
        rig.probe(10 * kSec + i * kMs, host, static_cast<std::uint16_t>(1000 + i));
    }
    auto v = rig.source(k);
    REQUIRE(v);
    CHECK(v->probes == 3);
    rig.drain();
    REQUIRE(rig.alerts.scan.size() == 1);
    CHECK(std::memcmp(&rig.alerts.scan[0].key, &k, sizeof k) == 0);
}

TEST_CASE("bpf logic: many sources probing closed ports raise a distributed alert") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Policy pol;
    pol.dist_sources = 4;
    pol.dist_ports = 3;
    pol.dist_window_ns = 5 * kSec;
    ProbeRig rig(pol);
    const std::uint32_t ns = 77;
    const std::uint64_t t0 = 50 * kSec;
    // Ports whose 1-in-64 buckets (perm >> 6) all differ.
    std::vector<std::uint16_t> ports;
    std::set<unsigned> buckets;
    for (std::uint16_t p = 1; ports.size() < 8; ++p)
        if (buckets.insert(st_port_perm(p) >> ST_BM_B_SHIFT).second) ports.push_back(p);

    // Three sources, then the fourth: the rule needs sources and ports.
    for (std::uint8_t s = 1; s <= 3; ++s) rig.probe(t0 + s * kMs, v4_src(s, ns), ports[s - 1]);
    // Repeated probes from a known source are not new sources.
    for (int i = 0; i < 5; ++i) rig.probe(t0 + 10 * kMs, v4_src(1, ns), ports[4]);
    rig.drain();
    CHECK(rig.alerts.dist.empty());
    rig.probe(t0 + 20 * kMs, v4_src(4, ns), ports[3]);
    // More sources in the same window: no second alert.
    rig.probe(t0 + 30 * kMs, v4_src(5, ns), ports[5]);
    rig.drain();
    REQUIRE(rig.alerts.dist.size() == 1);
    CHECK(rig.alerts.dist[0].netns == ns);
    CHECK(rig.alerts.dist[0].sources == 4);
    CHECK(rig.alerts.dist[0].ports_seen == 5);
    CHECK(rig.alerts.dist[0].window_start_ns == t0 + 1 * kMs);
    CHECK(rig.alerts.dist[0].ts_ns == t0 + 20 * kMs);

    // Four sources hitting one port (a service is down, clients retry): quiet.
    const std::uint32_t ns2 = 78;
    for (std::uint8_t s = 1; s <= 6; ++s) rig.probe(t0 + s * kMs, v4_src(s, ns2), 443);
    rig.drain();
    CHECK(rig.alerts.dist.size() == 1);

    // Probes that found open ports never count toward the distributed rule.
    const std::uint32_t ns3 = 79;
    for (std::uint8_t s = 1; s <= 6; ++s) rig.probe(t0 + s * kMs, v4_src(s, ns3), ports[s], ST_TECH_SYN, ST_OUT_OPEN);
    rig.drain();
    CHECK(rig.alerts.dist.size() == 1);
    CHECK(rig.alerts.scan.empty());
}

namespace {

// An --ignore prefix as the loader stores it: IPv6, IPv4 mapped (prefix + 96).
void ignore_prefix(ProbeRig& rig, const char* cidr_text) {
    const auto cidr = parse_cidr(cidr_text);
    REQUIRE_MESSAGE(cidr, cidr_text);
    struct {
        __u32 prefixlen;
        __u8 addr[16];
    } key{};
    if (cidr->addr.family == Family::v4) {
        key.prefixlen = 96u + cidr->prefix;
        key.addr[10] = key.addr[11] = 0xff;
        std::memcpy(key.addr + 12, cidr->addr.bytes.data(), 4);
    } else {
        key.prefixlen = cidr->prefix;
        std::memcpy(key.addr, cidr->addr.bytes.data(), 16);
    }
    const __u8 one = 1;
    REQUIRE(bpf_map__update_elem(rig.skel->maps.st_ignore, &key, sizeof key, &one, sizeof one, BPF_ANY) == 0);
}

// A probe source from its text form, as the kernel's st_probe carries it.
st_src_key src_of(const char* text, std::uint32_t netns = 1) {
    const auto a = parse_ip(text);
    REQUIRE_MESSAGE(a, text);
    st_src_key k{};
    k.netns = netns;
    k.family = a->family == Family::v4 ? ST_AF_INET : ST_AF_INET6;
    std::memcpy(k.addr, a->bytes.data(), 16);
    return k;
}

}  // namespace

TEST_CASE("bpf logic: --ignore prefixes drop probes before any accounting") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Policy pol;
    pol.have_ignores = true;
    pol.fast_threshold = 3;
    ProbeRig rig(pol);
    ignore_prefix(rig, "203.0.113.0/24");
    ignore_prefix(rig, "fd00:1::/64");
    ignore_prefix(rig, "2001:db8::7");

    int ignored = 0;
    for (const char* ignored_src : {"203.0.113.77", "fd00:1::5", "fd00:1::ffff:1", "2001:db8::7"}) {
        CAPTURE(ignored_src);
        const st_src_key k = src_of(ignored_src);
        for (std::uint16_t p = 1; p <= 5; ++p, ++ignored) rig.probe(kSec + p, k, p);
        CHECK_FALSE(rig.source(k));
    }
    // An IPv4 client seen on a dual-stack socket is still the IPv4 prober.
    st_src_key mapped = src_of("::ffff:203.0.113.78");
    mapped.family = ST_AF_INET6;
    const auto m = parse_ip("203.0.113.78");
    std::memset(mapped.addr, 0, 16);
    mapped.addr[10] = mapped.addr[11] = 0xff;
    std::memcpy(mapped.addr + 12, m->bytes.data(), 4);
    for (std::uint16_t p = 1; p <= 5; ++p, ++ignored) rig.probe(2 * kSec + p, mapped, p);
    CHECK_FALSE(rig.source(src_of("203.0.113.78")));

    rig.drain();
    CHECK(rig.alerts.scan.empty());
    CHECK(rig.counter(ST_CNT_IGNORED) == static_cast<std::uint64_t>(ignored));
    CHECK(rig.counter(ST_CNT_PROBES) == 0);

    // Neighbours of the ignored prefixes are tracked as usual.
    for (const char* tracked : {"203.0.114.1", "fd00:2::5", "2001:db8::8"}) {
        CAPTURE(tracked);
        const st_src_key k = src_of(tracked);
        for (std::uint16_t p = 1; p <= 3; ++p) rig.probe(3 * kSec + p, k, p);
        CHECK(rig.source(k));
    }
    rig.drain();
    CHECK(rig.alerts.scan.size() == 3);
    CHECK(rig.counter(ST_CNT_PROBES) == 9);
}

// BUG (reported, product unchanged): with --group-v6-64, st_ignored() looks up
// the grouped key, whose low 64 bits are zero, instead of the prober's
// address. An --ignore for one IPv6 host (or any prefix longer than /64 that
// does not contain the ::/64 base of its network) then never matches:
// probes from 2001:db8::7 with --ignore 2001:db8::7 --group-v6-64 are
// counted and can raise scan alerts.
TEST_CASE("bpf logic: --ignore of an IPv6 host holds with --group-v6-64") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    Policy pol;
    pol.have_ignores = true;
    pol.group_v6_64 = true;
    pol.fast_threshold = 3;
    ProbeRig rig(pol);
    ignore_prefix(rig, "2001:db8::7");
    ignore_prefix(rig, "fd00:1::/64");

    // A whole ignored /64 works whichever address probes.
    for (std::uint16_t p = 1; p <= 3; ++p) rig.probe(kSec + p, src_of("fd00:1::9"), p);
    CHECK(rig.counter(ST_CNT_IGNORED) == 3);

    // The ignored host: expected ignored, no source for its /64.
    for (std::uint16_t p = 1; p <= 3; ++p) rig.probe(2 * kSec + p, src_of("2001:db8::7"), p);
    st_src_key grouped = src_of("2001:db8::");
    rig.drain();
    CHECK(rig.counter(ST_CNT_IGNORED) == 6);
    CHECK_FALSE(rig.source(grouped));
    CHECK(rig.alerts.scan.empty());
}

// BUG (reported, product unchanged): st_record_probe compares the caller's
// `now` with v->last_ns / v->first_ns in unsigned arithmetic. The hooks take
// `now` before the lookup, so a probe handled on another CPU can store a
// later last_ns first; `now - v->last_ns` then wraps to ~2^64, exceeds the
// slow window, and the source's whole aggregate is wiped as a "new episode"
// (userspace then reports scan_end "restarted" and a fresh scan). Probes of
// one scan reach several CPUs whenever RSS spreads its flows, so a
// microsecond of disorder is routine under a fast scan.
TEST_CASE("bpf logic: slightly out-of-order timestamps keep the episode") {
    if (!have_root()) {
        MESSAGE("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return;
    }
    ProbeRig rig(Policy{});
    const st_src_key a = v4_src(9);
    const std::uint64_t t0 = 5000 * kSec;
    rig.probe(t0, a, 1);
    rig.probe(t0 + 5000, a, 2);  // CPU B, 5 us later, updates last_ns first
    rig.probe(t0 + 3000, a, 3);  // CPU A's probe, timestamped 2 us earlier
    const auto v = rig.source(a);
    REQUIRE(v);
    CHECK(v->first_ns == t0);
    CHECK(v->probes == 3);
    CHECK(v->n_exact == 3);
    // And a probe stamped before the entry's creation (CPU A took `now`,
    // CPU B created the entry) must not scramble the windows either.
    const st_src_key b = v4_src(10);
    rig.probe(t0 + 1000, b, 1);
    rig.probe(t0 + 400, b, 2);
    const auto w = rig.source(b);
    REQUIRE(w);
    CHECK(w->probes == 2);
    CHECK(w->fast_start_ms == 0);
    CHECK(w->fast_new == 2);
}
