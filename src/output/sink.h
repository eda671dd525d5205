// Where lines go: a file descriptor (stdout), written in batches. A reader
// that goes away (`scantrace | head -1`) is noticed at the next write or
// within one poll interval, and ends the run quietly.
#pragma once

#include <cstdint>
#include <string>

namespace scantrace {

class LineSink {
public:
    explicit LineSink(int fd) : fd_(fd) { buf_.reserve(kFlushAt * 2); }
    std::string& buffer() { return buf_; }
    // Call after appending whole lines; flushes when the batch is large.
    void maybe_flush() {
        if (buf_.size() >= kFlushAt) flush();
    }
    void flush();
    // True once the reader has gone (EPIPE, or POLLERR on a pipe).
    bool reader_gone();
    std::uint64_t lost_lines() const { return lost_lines_; }

private:
    static constexpr std::size_t kFlushAt = 64 * 1024;
    int fd_;
    std::string buf_;
    bool gone_ = false;
    std::uint64_t lost_lines_ = 0;
};

}  // namespace scantrace
