// The only code that touches libbpf: open the BPF objects, size the maps from
// the configuration, probe the kernel, choose one program per hook, load,
// attach, and hand out the ring buffer and counters.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <scantrace/events.h>

#include "cli/options.h"

namespace scantrace {

struct HookStatus {
    std::string name;     // what it observes, e.g. "inet_sock_set_state"
    bool attached = false;
    std::string program;  // BPF program name when attached
    std::string attach;   // "tp_btf", "raw_tp", ...
    std::string reason;   // why not attached
};

struct KernelCounters {
    std::array<std::uint64_t, ST_CNT_MAX> v{};
    std::uint64_t operator[](st_counter c) const { return v[c]; }
};

struct LoadError {
    int exit_code;  // documented exit codes: 1 runtime, 4 unsupported kernel
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
    KernelCounters read_counters() const;

    // Remember the owner of a port that was already listening at start, so
    // inbound connections to it are attributed. Never overwrites what the
    // kernel itself recorded meanwhile.
    bool seed_listener(const st_listener_key& key, const st_listener_val& val);

    // Stop all programs; maps stay readable for the final drain.
    void detach();

private:
    Loader() = default;
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::vector<HookStatus> hooks_;
};

// Route libbpf's log: to stderr when verbose, else kept for error messages.
void configure_libbpf_logging(bool verbose);
// The last lines libbpf logged (for a load error message).
std::string libbpf_last_error();

}  // namespace scantrace
