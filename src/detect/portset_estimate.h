// Distinct-port counts from a source's kernel port set (scantrace/portset.h).
#pragma once

#include <cstdint>
#include <vector>

#include <scantrace/events.h>

namespace scantrace {

struct PortCount {
    std::uint64_t value = 0;
    bool exact = false;  // true while at most 64 distinct ports were seen
};

// Exact up to 64 ports; beyond, the inverse-variance combination of the
// linear-counting bitmap (accurate for small and medium counts) and the
// exact 1-in-64 sample (accurate for large ones).
PortCount estimate_ports(const st_src_val& v);

// The estimator on raw bitmaps, for tests and benchmarks.
double estimate_from_bitmaps(const __u64 (&bm_a)[64], const __u64 (&bm_b)[16]);

// The first distinct ports seen, in order, at most max_n.
std::vector<std::uint16_t> sample_ports(const st_src_val& v, std::size_t max_n);

// Userspace twin of the kernel's insert, for tests: same structure, same
// return value (true if the port was new).
bool portset_insert(st_src_val& v, std::uint16_t port);

}  // namespace scantrace
