/* What a wake-up costs the sender on this host: a parent and a child
 * exchange N small messages over loopback TCP or a Unix socket pair; the
 * parent writes, then blocks in read for the answer. The child either
 * blocks in read too (it must be woken for each message) or polls its
 * socket without sleeping (it never needs waking). Prints the parent's CPU
 * time (getrusage) and wall time per round trip.
 *
 *   cc -O2 wakeup.c -o wakeup && ./wakeup tcp|unix block|poll N SIZE
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_us(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_sec * 1e6 +
           r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s tcp|unix block|poll N SIZE\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[3]), size = atoi(argv[4]), poll_peer = !strcmp(argv[2], "poll");
    int a, b, one = 1;
    static char buf[65536];
    if (size < 1 || size > (int)sizeof buf) return 2;
    if (!strcmp(argv[1], "unix")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
        a = sv[0];
        b = sv[1];
    } else {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in s = {0};
        socklen_t len = sizeof s;
        s.sin_family = AF_INET;
        s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(l, (void *)&s, sizeof s) || listen(l, 1) || getsockname(l, (void *)&s, &len))
            return 1;
        b = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(b, (void *)&s, sizeof s)) return 1;
        a = accept(l, 0, 0);
        setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    memset(buf, 'x', sizeof buf);
    if (fork() == 0) {
        close(a);
        for (int i = 0; i < n; i++) {
            for (int got = 0; got < size;) {
                int r = recv(b, buf, size - got, poll_peer ? MSG_DONTWAIT : 0);
                if (r == 0) exit(1);
                if (r > 0) got += r;
            }
            if (write(b, buf, size) != size) exit(1);
        }
        exit(0);
    }
    close(b);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double c0 = cpu_us();
    for (int i = 0; i < n; i++) {
        if (write(a, buf, size) != size) return 1;
        for (int got = 0; got < size;) {
            int r = read(a, buf, size - got);
            if (r <= 0) return 1;
            got += r;
        }
    }
    double c1 = cpu_us();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    wait(0);
    double wall = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3;
    printf("%-4s peer=%-5s size=%d: sender CPU %.1f us, wall %.1f us per round trip\n", argv[1],
           argv[2], size, (c1 - c0) / n, wall / n);
    return 0;
}
