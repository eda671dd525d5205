// Connection churn load generator: connect / small write / close against an
// accept loop, for a fixed time; prints connections per second as JSON.
//
//   churn --connect ADDR:PORT --seconds S --threads N   client only
//   churn --listen ADDR:PORT                            server only (runs until killed)
//   churn --self --seconds S --threads N                both in one process, on 127.0.0.1
//
// The server closes first, so TIME_WAIT lands on the server side and a long
// run never exhausts the client's ephemeral ports. With --self the accept
// loops stop only after every client thread is done (a client's last
// connection must still be served, or its read() would wait for ever), and
// every client read has a 5 s timeout all the same.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Endpoint {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

bool parse_endpoint(const std::string& s, Endpoint& ep) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = s.substr(0, colon), port = s.substr(colon + 1);
    if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
    int p = std::atoi(port.c_str());
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ep.ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ep.ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(p));
        ep.len = sizeof(*v4);
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(p));
        ep.len = sizeof(*v6);
        return true;
    }
    return false;
}

int listen_on(Endpoint& ep) {
    int fd = socket(ep.ss.ss_family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&ep.ss), ep.len) != 0 || listen(fd, 4096) != 0) {
        std::perror("churn: bind/listen");
        std::exit(1);
    }
    getsockname(fd, reinterpret_cast<sockaddr*>(&ep.ss), &ep.len);
    return fd;
}

void serve(int lfd, const std::atomic<bool>& stop) {
    char buf[256];
    while (!stop.load(std::memory_order_relaxed)) {
        int c = accept(lfd, nullptr, nullptr);
        if (c < 0) continue;
        const timeval tv{5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)!read(c, buf, sizeof(buf));
        close(c);
    }
}

void client(const Endpoint& ep, const std::atomic<bool>& stop, std::atomic<uint64_t>& done,
            std::atomic<uint64_t>& failed) {
    const char msg[64] = "scantrace churn";
    char buf[16];
    while (!stop.load(std::memory_order_relaxed)) {
        int fd = socket(ep.ss.ss_family, SOCK_STREAM, 0);
        const timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, reinterpret_cast<const sockaddr*>(&ep.ss), ep.len) == 0 && write(fd, msg, sizeof(msg)) > 0) {
            if (read(fd, buf, sizeof(buf)) >= 0)  // EOF once the server closed
                done.fetch_add(1, std::memory_order_relaxed);
            else
                failed.fetch_add(1, std::memory_order_relaxed);
        } else {
            failed.fetch_add(1, std::memory_order_relaxed);
        }
        close(fd);
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string connect_to, listen_at;
    bool self = false;
    double seconds = 3;
    int threads = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "churn: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--connect") connect_to = next();
        else if (a == "--listen") listen_at = next();
        else if (a == "--self") self = true;
        else if (a == "--seconds") seconds = std::atof(next().c_str());
        else if (a == "--threads") threads = std::atoi(next().c_str());
        else {
            std::fprintf(stderr, "churn: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    std::atomic<bool> stop{false}, servers_stop{false};
    if (!listen_at.empty()) {
        Endpoint ep;
        if (!parse_endpoint(listen_at, ep)) return 2;
        int lfd = listen_on(ep);
        std::vector<std::thread> ts;
        for (int i = 0; i < 2; ++i) ts.emplace_back(serve, lfd, std::cref(stop));
        for (auto& t : ts) t.join();
        return 0;
    }
    Endpoint ep;
    int lfd = -1;
    std::vector<std::thread> servers;
    if (self) {
        parse_endpoint("127.0.0.1:0", ep);
        lfd = listen_on(ep);
        for (int i = 0; i < threads; ++i) servers.emplace_back(serve, lfd, std::cref(servers_stop));
    } else if (!parse_endpoint(connect_to, ep)) {
        std::fprintf(stderr, "churn: --connect ADDR:PORT, --listen ADDR:PORT or --self\n");
        return 2;
    }
    std::atomic<uint64_t> done{0}, failed{0};
    std::vector<std::thread> clients;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < threads; ++i) clients.emplace_back(client, std::cref(ep), std::cref(stop), std::ref(done), std::ref(failed));
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : clients) t.join();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (lfd >= 0) {
        servers_stop = true;
        shutdown(lfd, SHUT_RDWR);  // wakes the accept loops
        close(lfd);
        for (auto& t : servers) t.detach();
    }
    std::printf("{\"conns\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"conns_per_s\":%.1f}\n",
                static_cast<unsigned long long>(done.load()), static_cast<unsigned long long>(failed.load()), dt,
                done.load() / dt);
    std::fflush(stdout);
    std::_Exit(0);
}
