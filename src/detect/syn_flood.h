// SYN floods per listening port. Signals: SYNs reaching the listener (BPF,
// per port), SYN-ACK retransmits (BPF), and the namespace's own exact
// counters: half-open request sockets per port (the listener's request
// queue length, read by BPF) and TcpExt SyncookiesSent / ListenOverflows /
// ListenDrops. Under SYN
// cookies request-socket hooks see few SYNs, but the kernel counters still
// tell. The kernel sends SYN cookies only when a listener's SYN queue is
// full, so cookies sent while a port holds half-open connections is itself a
// flood verdict, whatever the backlog size.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include <scantrace/events.h>

#include "detect/reports.h"

namespace scantrace {

struct SynSample {
    std::uint32_t netns = 0;
    std::uint16_t port = 0;
    std::uint64_t syns = 0;            // cumulative
    std::uint64_t synack_retrans = 0;  // cumulative
    std::uint32_t half_open = 0;       // the listener's request queue, as the kernel last saw it
};

struct NetnsTcpSample {
    std::uint64_t syncookies_sent = 0, listen_drops = 0, listen_overflows = 0;  // cumulative
    // SYN_RECV sockets per local port, when known from the namespace (tests
    // inject them; the agent takes half-open counts from the kernel's
    // listener queues instead: reading /proc/net/tcp walks every socket).
    std::map<std::uint16_t, std::uint32_t> half_open;
};

class SynFloodMonitor {
public:
    using NetnsReader = std::function<std::optional<NetnsTcpSample>(std::uint32_t netns)>;

    SynFloodMonitor(double rate_threshold, std::uint32_t half_open_threshold, double end_after_s = 5)
        : rate_thr_(rate_threshold), half_open_thr_(half_open_threshold), end_after_ns_(end_after_s * 1e9) {}

    std::vector<SynFloodReport> tick(std::uint64_t now_ns, const std::vector<SynSample>& samples,
                                     const NetnsReader& read_netns);
    std::size_t flooding() const;

private:
    struct PortState {
        std::uint64_t syns = 0, synack = 0;
        bool flooding = false;
        std::uint64_t since_ns = 0, calm_since_ns = 0;
        double peak_rate = 0;
        std::uint32_t peak_half_open = 0;
        std::uint64_t last_active_ns = 0;  // last tick with new SYNs
        std::uint32_t last_half_open = 0;
    };
    struct NsState {
        NetnsTcpSample last;
        bool have = false;
    };
    double rate_thr_;
    std::uint32_t half_open_thr_;
    double end_after_ns_;
    std::uint64_t last_tick_ns_ = 0;
    std::map<std::pair<std::uint32_t, std::uint16_t>, PortState> ports_;
    std::map<std::uint32_t, NsState> netns_;
};

// The namespace's TcpExt counters (/proc/PID/net/netstat: a few hundred
// bytes, cheap at any socket count), through a process inside it.
std::optional<NetnsTcpSample> read_netns_tcp(std::uint32_t pid);

// A process inside network namespace netns (cached; rescans /proc on a miss).
std::optional<std::uint32_t> pid_in_netns(std::uint32_t netns);

}  // namespace scantrace
