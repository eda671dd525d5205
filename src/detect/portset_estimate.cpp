#include "detect/portset_estimate.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include <scantrace/portset.h>

namespace scantrace {
namespace {

constexpr double kUniverse = 65536.0;
constexpr double kPortsPerBitA = 1 << ST_BM_A_SHIFT;  // 16
constexpr double kSampleRate = 1.0 / (1 << ST_BM_B_SHIFT);  // 1/64

template <std::size_t N>
unsigned popcount_all(const __u64 (&words)[N]) {
    unsigned n = 0;
    for (auto w : words) n += static_cast<unsigned>(std::popcount(w));
    return n;
}

}  // namespace

double estimate_from_bitmaps(const __u64 (&bm_a)[64], const __u64 (&bm_b)[16]) {
    const double bits_a = ST_BM_A_BITS;
    const double empty_a = bits_a - popcount_all(bm_a);
    const double n_b = popcount_all(bm_b) / kSampleRate;
    if (empty_a <= 0) return n_b;  // bm_a saturated: only the sample speaks

    // Each bm_a bit stands for exactly 16 ports (perm is a bijection), so the
    // chance that a bit is still clear after n distinct ports is about
    // (1 - n/N)^16: invert it.
    const double v = empty_a / bits_a;
    const double f_a = 1.0 - std::pow(v, 1.0 / kPortsPerBitA);
    const double n_a = kUniverse * f_a;

    // Weigh the two by their variances, both taken at one fill estimate
    // (the better-conditioned one), so neither gets infinite weight from a
    // lucky count of zero.
    double f = f_a < 0.25 ? f_a : std::clamp(n_b / kUniverse, 1e-6, 1.0 - 1e-6);
    f = std::clamp(f, 1e-6, 1.0 - 1e-6);
    const double vf = std::pow(1.0 - f, kPortsPerBitA);
    const double var_v = vf * (1.0 - vf) / bits_a;
    const double dn_dv = kUniverse * (1.0 - f) / (kPortsPerBitA * vf);
    const double var_a = dn_dv * dn_dv * var_v;
    const double var_b = (1.0 / (kSampleRate * kSampleRate)) * ST_BM_B_BITS * f * (1.0 - f);
    if (!(var_a > 0) || !std::isfinite(var_a)) return n_b;
    if (!(var_b > 0)) return n_a;
    const double w_a = 1.0 / var_a, w_b = 1.0 / var_b;
    return (n_a * w_a + n_b * w_b) / (w_a + w_b);
}

PortCount estimate_ports(const st_src_val& v) {
    if (v.n_exact < ST_PORTS_EXACT || !(v.alerted & ST_SRC_OVERFLOW)) return {v.n_exact, true};
    double est = estimate_from_bitmaps(v.bm_a, v.bm_b);
    // More than 64 distinct ports were seen: never report fewer than 65.
    auto n = static_cast<std::uint64_t>(std::llround(std::clamp(est, double{ST_PORTS_EXACT + 1}, kUniverse)));
    return {n, false};
}

std::vector<std::uint16_t> sample_ports(const st_src_val& v, std::size_t max_n) {
    std::size_t n = std::min<std::size_t>({v.n_exact, ST_PORTS_EXACT, max_n});
    return std::vector<std::uint16_t>(v.ports, v.ports + n);
}

bool portset_insert(st_src_val& v, std::uint16_t port) {
    const std::uint16_t q = st_port_perm(port);
    const unsigned ia = q >> ST_BM_A_SHIFT;
    const std::uint64_t bit = 1ULL << (ia & 63);
    auto& word = v.bm_a[(ia >> 6) & 63];
    const bool maybe_seen = word & bit;
    word |= bit;
    if (st_port_sampled(port)) {
        const unsigned ib = port >> ST_BM_B_SHIFT;
        v.bm_b[(ib >> 6) & 15] |= 1ULL << (ib & 63);
    }
    if (maybe_seen) {
        if (v.n_exact >= ST_PORTS_EXACT && (v.alerted & ST_SRC_OVERFLOW)) return false;
        for (unsigned i = 0; i < v.n_exact; ++i)
            if (v.ports[i] == port) return false;
    }
    if (v.n_exact < ST_PORTS_EXACT)
        v.ports[v.n_exact++] = port;
    else
        v.alerted |= ST_SRC_OVERFLOW;
    return true;
}

}  // namespace scantrace
