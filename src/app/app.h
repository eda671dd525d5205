// The tracer's run loop: load, report, poll, shut down cleanly.
#pragma once

#include "cli/options.h"

namespace scantrace {

// Runs until SIGINT/SIGTERM or until stdout's reader goes away; returns the
// process exit code (see docs/schema.md, "Exit codes").
int run_tracer(const Config& cfg);

}  // namespace scantrace
