// The command-line filters. Each applies to the records that carry its field:
//   --port        state, close, listen (local or remote port)
//   --state       state (old or new state)
//   --peer-scope  state, close
//   --no-loopback state, close
// start and stats records always pass.
#pragma once

#include "cli/options.h"
#include "events/decode.h"

namespace scantrace {

class Filter {
public:
    explicit Filter(const Config& cfg) : cfg_(cfg) {}
    bool pass_state(const ConnEvent& e) const;
    bool pass_close(const ConnEvent& e) const;
    bool pass_listen(const ListenEvent& e) const;

private:
    bool pass_conn(const ConnEvent& e) const;
    bool pass_port(std::uint16_t a, std::uint16_t b) const;
    const Config& cfg_;
};

}  // namespace scantrace
