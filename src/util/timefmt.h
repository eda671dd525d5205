// Timestamps: the kernel stamps records with bpf_ktime_get_boot_ns()
// (CLOCK_BOOTTIME); records print UTC wall time in RFC 3339 with microseconds.
#pragma once

#include <cstdint>
#include <string>

namespace scantrace {

// 1700000000123456789 -> "2023-11-14T22:13:20.123456Z" (truncated to µs).
std::string rfc3339_utc_us(std::int64_t unix_ns);
void append_rfc3339_utc_us(std::string& out, std::int64_t unix_ns);

// Converts CLOCK_BOOTTIME nanoseconds to Unix nanoseconds, with the offset
// sampled once at construction (and by resample()).
class BootClock {
public:
    BootClock();
    void resample();
    std::int64_t to_unix_ns(std::uint64_t boot_ns) const { return static_cast<std::int64_t>(boot_ns) + offset_; }
    static std::uint64_t now_boot_ns();
    static std::int64_t now_unix_ns();

private:
    std::int64_t offset_ = 0;
};

}  // namespace scantrace
