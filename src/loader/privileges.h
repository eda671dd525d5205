// What the process may do, checked before touching BPF so that a missing
// privilege is one clear line, not a libbpf EPERM dump.
#pragma once

#include <string>

namespace scantrace {

// Empty when everything needed is there; otherwise a one-line explanation
// naming the missing capabilities.
std::string missing_privileges();

}  // namespace scantrace
