/* The fd relay that would let a child of a parent with many fds skip copying them (issue 6, b
 * at 8x; see clone_files.c for the kernel mechanism). The parent keeps a socketpair at a low fd
 * for its whole life. Per spawn, it sends the fds the child needs (here only the error pipe's
 * write end) over it with SCM_RIGHTS. The child, cloned with CLONE_FILES, unshares with
 * close_range(sv[1] + 1, ~0, CLOSE_RANGE_UNSHARE), so it copies only the fds up to the socket.
 * It then receives the needed fds into its small private table and execs. Mode 0 is what
 * rsubprocess does today: the child's own copy of the whole table, close_range around the
 * error pipe.
 *
 * Spawns here are vfork-style (the parent waits for the exec), so the messages cannot cross;
 * rsubprocess's children run while the loop goes on, so a real version must match a child to
 * its message or serialise the send-receive step.
 *
 * Not part of make bench. Build and run:
 *   cc -O2 -o /tmp/fd_relay benches/probes/fd_relay.c
 *   for e in 0 3200; do for m in 0 1; do /tmp/fd_relay $e $m; done; done
 *
 * 2026-12-02, 2-vCPU VM, Linux 6.18, two runs, p50 of 400 spawns of /bin/true.
 *   3200 extra fds: 1008 / 884 us today -> 647 / 686 us relayed.
 *   No extra fds: 629 / 521 us today -> 679 / 573 us relayed, i.e. +50 us.
 * So the relay pays only above roughly 450 open fds (~0.11 us per fd saved against ~50 us
 * of sendmsg/recvmsg): use it only when the parent's table is large.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/close_range.h>
static int mode, sv[2], errw;
static char stack[256*1024];
static int child(void *arg) {
    (void)arg;
    int w = errw;
    if (mode) {
        int lo = sv[1] + 1;
        syscall(SYS_close_range, lo, ~0U, CLOSE_RANGE_UNSHARE);
        char buf[1]; struct iovec io = {buf, 1};
        char c[CMSG_SPACE(sizeof(int))];
        struct msghdr m = {0}; m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = c; m.msg_controllen = sizeof c;
        if (syscall(SYS_recvmsg, sv[1], &m, MSG_CMSG_CLOEXEC) != 1) syscall(SYS_exit, 126);
        memcpy(&w, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
        syscall(SYS_close_range, 3, lo - 1, 0);  /* the socketpair and anything below it */
    } else {
        /* keep errw, close the rest (what rsubprocess does today) */
        syscall(SYS_close_range, 3, errw - 1, 0);
        syscall(SYS_close_range, errw + 1, ~0U, 0);
    }
    (void)w;
    char *argv[] = {"/bin/true", NULL}, *envp[] = {NULL};
    syscall(SYS_execve, "/bin/true", argv, envp);
    syscall(SYS_exit, 127);
    return 0;
}
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int extra = atoi(argv[1]); mode = atoi(argv[2]); int n = 400;
    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv);
    for (int i = 0; i < extra; i++) open("/dev/null", O_RDONLY | O_CLOEXEC);
    double lat[400];
    for (int i = 0; i < n; i++) {
        double t = now();
        int p[2]; pipe2(p, O_CLOEXEC); errw = p[1];
        if (mode) {
            char b = 0; struct iovec io = {&b, 1};
            char c[CMSG_SPACE(sizeof(int))]; memset(c, 0, sizeof c);
            struct msghdr m = {0}; m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = c; m.msg_controllen = sizeof c;
            struct cmsghdr *h = CMSG_FIRSTHDR(&m); h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(h), &p[1], sizeof(int));
            if (sendmsg(sv[0], &m, 0) != 1) { perror("sendmsg"); return 1; }
        }
        int flags = CLONE_VM | CLONE_VFORK | SIGCHLD | (mode ? CLONE_FILES : 0);
        pid_t pid = clone(child, stack + sizeof stack, flags, NULL);
        close(p[1]);
        char x; ssize_t r = read(p[0], &x, 1); close(p[0]);
        int st; waitpid(pid, &st, 0);
        lat[i] = now() - t;
        if (r != 0 || !WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "bad: r=%zd st=%d\n", r, st); return 1; }
    }
    qsort(lat, n, sizeof *lat, cmp);
    struct rusage ru; getrusage(RUSAGE_CHILDREN, &ru);
    printf("extra %5d %-26s p50 %4.0f us  child cpu %4.0f us\n", extra, mode ? "relay: CLONE_FILES+UNSHARE" : "own table, keep errpipe",
           lat[n/2]*1e6, (ru.ru_utime.tv_sec*1e6+ru.ru_utime.tv_usec+ru.ru_stime.tv_sec*1e6+ru.ru_stime.tv_usec)/n);
    return 0;
}
