#include "output/filter.h"

namespace scantrace {

bool Filter::pass_port(std::uint16_t a, std::uint16_t b) const {
    return cfg_.ports.empty() || cfg_.ports.count(a) || cfg_.ports.count(b);
}

bool Filter::pass_conn(const ConnEvent& e) const {
    if (!pass_port(e.ep.lport, e.ep.rport)) return false;
    if (cfg_.no_loopback || !cfg_.peer_scopes.empty()) {
        Scope s = classify(e.ep.raddr);
        if (cfg_.no_loopback && s == Scope::loopback) return false;
        if (!cfg_.peer_scopes.empty() && !cfg_.peer_scopes.count(s)) return false;
    }
    return true;
}

bool Filter::pass_state(const ConnEvent& e) const {
    if (!cfg_.states.empty() && !cfg_.states.count(e.oldstate) && !cfg_.states.count(e.newstate)) return false;
    return pass_conn(e);
}

bool Filter::pass_close(const ConnEvent& e) const { return pass_conn(e); }

bool Filter::pass_listen(const ListenEvent& e) const { return pass_port(e.ep.lport, e.ep.lport); }

}  // namespace scantrace
