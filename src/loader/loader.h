// The only code that touches libbpf: open the BPF objects, size the maps from
// the configuration, probe the kernel, choose one program family per hook,
// load, attach, and hand out the ring buffer, counters and maps.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <scantrace/events.h>

#include "cli/options.h"

namespace scantrace {

struct HookStatus {
    std::string name;      // what it observes, e.g. "inet_sock_set_state"
    std::string covers;    // what a user loses without it
    bool attached = false;
    std::vector<std::string> programs;  // BPF program names when attached
    std::string attach;    // family: "tp_btf", "raw_tp", "fentry", "kprobe", "sock_ops"
    std::string reason;    // why not attached (or why better variants were skipped)
};

struct KernelCounters {
    std::array<std::uint64_t, ST_CNT_MAX> v{};
    std::uint64_t operator[](st_counter c) const { return v[c]; }
};

struct MapMemory {
    std::string name;
    std::uint64_t bytes = 0;  // the kernel's own figure (fdinfo memlock)
};

struct LoadError {
    int exit_code;  // documented exit codes: 1 runtime, 2 bad configuration, 4 unsupported kernel
    std::string message;
};

class Loader {
public:
    // open -> configure -> probe -> choose -> load -> attach.
    static std::variant<std::unique_ptr<Loader>, LoadError> start(const Config& cfg);
    ~Loader();
    Loader(const Loader&) = delete;
    Loader& operator=(const Loader&) = delete;

    int ringbuf_fd() const;
    const std::vector<HookStatus>& hooks() const { return hooks_; }
    const std::vector<MapMemory>& memory() const { return memory_; }
    std::uint64_t memory_total() const;
    KernelCounters read_counters() const;

    // Remember the owner of a port that was already listening at start, so
    // inbound connections to it are attributed. Never overwrites what the
    // kernel itself recorded meanwhile.
    bool seed_listener(const st_listener_key& key, const st_listener_val& val);

    // Teach the sock_ops path which namespace inode a netns cookie stands for.
    void seed_netns_cookie(std::uint64_t cookie, std::uint32_t netns);

    std::optional<st_src_val> read_source(const st_src_key& key) const;
    void delete_source(const st_src_key& key);
    // Entries in the source table now (walks the keys: for stats, not hot paths).
    std::uint64_t count_sources() const;
    std::optional<st_dist_val> read_dist(std::uint32_t netns) const;
    // Every (listener, SYN counters) pair.
    void for_each_syn(const std::function<void(const st_listener_key&, const st_syn_val&)>& fn) const;
    // Every tracked connection the kernel marked ESTABLISHED (ST_F_ESTABLISHED),
    // keyed by socket id: what --all-states off leaves for userspace to report.
    void for_each_open_conn(const std::function<void(std::uint64_t, const st_conn_val&)>& fn) const;

    // Stop all programs; maps stay readable for the final drain.
    void detach();

private:
    Loader() = default;
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::vector<HookStatus> hooks_;
    std::vector<MapMemory> memory_;
};

// Route libbpf's log: to stderr when verbose, else kept for error messages.
void configure_libbpf_logging(bool verbose);
// The last lines libbpf logged (for a load error message).
std::string libbpf_last_error();

}  // namespace scantrace
