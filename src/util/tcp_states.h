// TCP state names as netstat prints them. The kernel may add states: an
// unknown value prints as its number and is never used as an index unchecked.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace scantrace {

// 1 ESTABLISHED, 2 SYN_SENT, 3 SYN_RECV, 4 FIN_WAIT1, 5 FIN_WAIT2,
// 6 TIME_WAIT, 7 CLOSE, 8 CLOSE_WAIT, 9 LAST_ACK, 10 LISTEN, 11 CLOSING,
// 12 NEW_SYN_RECV, 13 BOUND_INACTIVE; anything else -> decimal string.
inline constexpr unsigned kTcpEstablished = 1;
inline constexpr unsigned kTcpClose = 7;
std::string tcp_state_name(unsigned state);
// The same without allocating for known states; an unknown one is written
// into scratch and the view points there.
std::string_view tcp_state_view(unsigned state, std::string& scratch);
// Case-insensitive inverse; also accepts a decimal number. nullopt on error.
std::optional<unsigned> parse_tcp_state(std::string_view name);

}  // namespace scantrace
