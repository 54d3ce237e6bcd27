/* The kernel's cost of one request-answer exchange between two processes:
 * 300-byte messages back and forth, 200,000 times, over loopback TCP
 * (TCP_NODELAY) or a Unix socket pair. Prints the round trip and the
 * initiating process's CPU per round trip.
 *   cc -O2 pingpong.c -o pingpong && ./pingpong tcp && ./pingpong unix
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 200000, SIZE = 300 };

static void tcp_pair(int *a, int *b) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof s;
    bind(l, (struct sockaddr *)&s, sizeof s);
    listen(l, 1);
    getsockname(l, (struct sockaddr *)&s, &len);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    connect(*a, (struct sockaddr *)&s, sizeof s);
    *b = accept(l, 0, 0);
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    close(l);
}

int main(int argc, char **argv) {
    int unix_socket = argc > 1 && argv[1][0] == 'u', a, b;
    char buf[SIZE];
    if (unix_socket) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        a = sv[0];
        b = sv[1];
    } else {
        tcp_pair(&a, &b);
    }
    memset(buf, 'x', sizeof buf);
    if (fork() == 0) {
        for (int i = 0; i < ROUNDS; i++) {
            if (read(b, buf, SIZE) <= 0 || write(b, buf, SIZE) != SIZE) _exit(1);
        }
        _exit(0);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < ROUNDS; i++) {
        if (write(a, buf, SIZE) != SIZE || read(a, buf, SIZE) <= 0) return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    wait(0);
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    double cpu = (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
    double wall = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3;
    printf("%s: round trip %.2f us, the initiator's CPU %.2f us per round trip\n",
           unix_socket ? "unix" : "tcp", wall / ROUNDS, cpu / ROUNDS);
    return 0;
}
