/*
 * The floor of any relay: the cheapest proxy this machine can run.
 *
 * One thread, one epoll loop, blocking sends, no parsing, no TLS, no cancel: every
 * byte read from one side is written to the other. bench/proxy_pgbench.py compiles it
 * with the system's C compiler and runs pgbench through it, so that the proxy's TPS
 * can be read against what the kernel alone allows on this machine (two extra socket
 * hops per round trip, and the relay's wake-ups). Not part of the product.
 *
 *     floor_relay [-w WORKERS] PORT [SOCKET_DIR]
 *
 * listens on 127.0.0.1 (a free port, printed as "floor relay on N") and connects each
 * client to PostgreSQL on 127.0.0.1:PORT, or on SOCKET_DIR/.s.PGSQL.PORT when given.
 * With -w, WORKERS processes listen on that port with SO_REUSEPORT, as the proxy's
 * workers do, so that the floor is measured with as many processes as the proxy has.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FD 65536

static int peer[MAX_FD];

static int connect_upstream(int port, const char *socket_dir) {
    int one = 1;
    if (socket_dir != NULL) {
        struct sockaddr_un to = {.sun_family = AF_UNIX};
        snprintf(to.sun_path, sizeof to.sun_path, "%s/.s.PGSQL.%d", socket_dir, port);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&to, sizeof to) == 0) return fd;
        if (fd >= 0) close(fd);
        return -1;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&to, sizeof to) == 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
    }
    if (fd >= 0) close(fd);
    return -1;
}

static int send_all(int fd, const char *data, ssize_t size) {
    while (size > 0) {
        ssize_t sent = send(fd, data, size, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += sent;
        size -= sent;
    }
    return 0;
}

static int listen_on(int port) {
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in here = {.sin_family = AF_INET, .sin_port = htons(port)};
    here.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(listener, (struct sockaddr *)&here, sizeof here) != 0 || listen(listener, 128)) {
        perror("floor_relay: listen");
        exit(1);
    }
    return listener;
}

int main(int argc, char **argv) {
    int workers = 1;
    if (argc > 2 && strcmp(argv[1], "-w") == 0) {
        workers = atoi(argv[2]);
        argv += 2;
        argc -= 2;
    }
    if (argc < 2 || workers < 1) {
        fprintf(stderr, "usage: floor_relay [-w WORKERS] PORT [SOCKET_DIR]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *socket_dir = argc > 2 ? argv[2] : NULL;
    int one = 1;
    int listener = listen_on(0);
    struct sockaddr_in here;
    socklen_t size = sizeof here;
    getsockname(listener, (struct sockaddr *)&here, &size);
    int parent = 1;
    for (int w = 1; w < workers && parent; w++) {
        if (fork() == 0) {
            parent = 0;
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* ends with the first process */
            close(listener);
            listener = listen_on(ntohs(here.sin_port));
        }
    }
    if (parent) {
        printf("floor relay on %d\n", ntohs(here.sin_port));
        fflush(stdout);
    }
    int poll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(poll, EPOLL_CTL_ADD, listener, &event);
    struct epoll_event ready[64];
    static char buffer[65536];
    for (;;) {
        int count = epoll_wait(poll, ready, 64, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listener) {
                int client = accept(listener, NULL, NULL);
                if (client < 0) continue;
                int upstream = connect_upstream(port, socket_dir);
                if (upstream < 0 || client >= MAX_FD || upstream >= MAX_FD) {
                    close(client);
                    if (upstream >= 0) close(upstream);
                    continue;
                }
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                peer[client] = upstream;
                peer[upstream] = client;
                event.data.fd = client;
                epoll_ctl(poll, EPOLL_CTL_ADD, client, &event);
                event.data.fd = upstream;
                epoll_ctl(poll, EPOLL_CTL_ADD, upstream, &event);
                continue;
            }
            if (peer[fd] < 0) continue; /* closed earlier in this batch */
            /* not blocking: the event may be a stale one for an fd number reused since */
            ssize_t got = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
            if (got <= 0 || send_all(peer[fd], buffer, got) != 0) {
                int other = peer[fd];
                peer[fd] = peer[other] = -1;
                close(other);
                close(fd);
            }
        }
    }
}
