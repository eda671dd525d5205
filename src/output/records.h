// Record formatting: one line per record, JSON (the contract in
// docs/schema.md) or aligned text for a person at a terminal.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/options.h"
#include "detect/reports.h"
#include "events/decode.h"
#include "loader/loader.h"
#include "util/services.h"
#include "util/timefmt.h"

namespace scantrace {

inline constexpr int kSchemaVersion = 1;

enum class RecordType : std::uint8_t {
    start,
    listen,
    state,
    close,
    stats,
    scan,
    scan_progress,
    scan_end,
    distributed_scan,
    syn_flood,
    syn_flood_end,
    local_scan,
    count_
};
std::string_view record_type_name(RecordType t);

struct StartInfo {
    std::string version;
    std::string kernel;
    std::uint32_t pid = 0;
    std::vector<HookStatus> hooks;
    std::vector<MapMemory> memory;
    const Config* config = nullptr;
};

struct StatsInfo {
    bool final = false;
    double uptime_s = 0;
    KernelCounters kernel;
    std::array<std::uint64_t, static_cast<std::size_t>(RecordType::count_)> records{};
    std::uint64_t filtered = 0;
    std::uint64_t lost_decode = 0;
    std::uint64_t lost_output = 0;
    std::uint64_t sources_live = 0;     // entries in the kernel source table now
    std::uint64_t sources_evicted = 0;  // created - live - removed: LRU evictions
    std::uint64_t scans_active = 0;
    std::uint64_t syn_floods_active = 0;
};

// "inventory", "open" or "close" for listen records.
enum class ListenKind : std::uint8_t { inventory, open, close };

class Formatter {
public:
    Formatter(const BootClock& clock, const ServiceTable& services) : clock_(clock), services_(services) {}
    virtual ~Formatter() = default;
    // Each appends exactly one line (with its '\n') to out.
    virtual void start(std::string& out, std::int64_t unix_ns, const StartInfo& s) = 0;
    virtual void listen(std::string& out, const ListenEvent& e, ListenKind kind, std::int64_t unix_ns) = 0;
    virtual void state(std::string& out, const ConnEvent& e) = 0;
    virtual void close(std::string& out, const ConnEvent& e) = 0;
    virtual void stats(std::string& out, std::int64_t unix_ns, const StatsInfo& s) = 0;
    virtual void scan(std::string& out, const ScanReport& r, std::int64_t unix_ns) = 0;
    virtual void distributed_scan(std::string& out, const DistributedScanReport& r, std::int64_t unix_ns) = 0;
    virtual void syn_flood(std::string& out, const SynFloodReport& r, std::int64_t unix_ns) = 0;
    virtual void local_scan(std::string& out, const LocalScanReport& r, std::int64_t unix_ns) = 0;

protected:
    const BootClock& clock_;
    const ServiceTable& services_;
};

std::unique_ptr<Formatter> make_formatter(OutputFormat f, const BootClock& clock, const ServiceTable& services);

// Shared vocabulary of both formats.
std::string_view direction_name(std::uint8_t dir);  // inbound / outbound / unknown (also for bad values)
std::string_view family_name(const IpAddr& a);       // ipv4 / ipv6
std::string_view proto_name(std::uint8_t proto);     // tcp / udp / "other"

}  // namespace scantrace
