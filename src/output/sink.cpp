#include "output/sink.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace scantrace {

void LineSink::flush() {
    std::size_t off = 0;
    while (off < buf_.size() && !gone_) {
        ssize_t n = ::write(fd_, buf_.data() + off, buf_.size() - off);
        if (n > 0) {
            off += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            // A non-blocking stdout that is full: wait for room rather than drop.
            pollfd p{fd_, POLLOUT, 0};
            ::poll(&p, 1, 100);
        } else {
            if (n < 0 && errno == EPIPE) gone_ = true;
            // Whatever could not be written is lost: count the lines.
            lost_lines_ += static_cast<std::uint64_t>(std::count(buf_.begin() + off, buf_.end(), '\n'));
            break;
        }
    }
    buf_.clear();
}

bool LineSink::reader_gone() {
    if (gone_) return true;
    pollfd p{fd_, 0, 0};
    // A pipe whose read end closed reports POLLERR to the writer.
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) gone_ = true;
    return gone_;
}

}  // namespace scantrace
