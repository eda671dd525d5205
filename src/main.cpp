// scantrace: wiring only. Everything else lives in scantrace_core, which the
// tests link too.
#include <cstdio>

#include "app/app.h"
#include "cli/options.h"

int main(int argc, char** argv) {
    auto parsed = scantrace::parse_command_line(argc, argv);
    if (!parsed.config) {
        std::FILE* to = parsed.exit_code == 0 ? stdout : stderr;
        std::fprintf(to, "%s\n", parsed.message.c_str());
        return parsed.exit_code;
    }
    try {
        return scantrace::run_tracer(*parsed.config);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "scantrace: %s\n", e.what());
        return 1;
    }
}
