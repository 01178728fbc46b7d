/* Spawning from a parent with many fds (issue 6, b at 8x): every child copies the parent's fd
 * table and closes it again, so with many fds open (a pidfd per live child, a server's
 * sockets) each spawn costs more. Three ways for the child to get rid of the table, each over
 * 400 sequential vfork-style spawns of /bin/true, printing p50 latency and CPU per child:
 *
 *   0  what rsubprocess does today: the child's own copy of the whole table, close_range
 *      around the error pipe's write end.
 *   1  the relay: the parent keeps a socketpair at a low fd for its whole life and, per
 *      spawn, sends the fds the child needs (here the error pipe's write end) over it with
 *      SCM_RIGHTS. The child, cloned with CLONE_FILES, unshares with
 *      close_range(sv[1] + 1, ~0, CLOSE_RANGE_UNSHARE), so it copies only the fds up to the
 *      socket, then receives the needed fds into its small private table and execs.
 *   2  the kernel mechanism alone: CLONE_FILES + close_range(3, ~0, CLOSE_RANGE_UNSHARE).
 *      The kernel copies only the fds below the range (fs/file.c, __close_range), so nothing
 *      above 2 is copied or closed; the child carries no fd of its own (no error pipe).
 *
 * Spawns here are vfork-style (the parent waits for the exec), so the relay's messages cannot
 * cross; rsubprocess's children run while the loop goes on, so a real version must match a
 * child to its message or serialise the send-receive step.
 *
 * Not part of make bench. Build and run:
 *   cc -O2 -o /tmp/fd_relay benches/probes/fd_relay.c
 *   for e in 0 3200; do for m in 0 1 2; do /tmp/fd_relay $e $m; done; done
 *
 * 2026-12-02, 2-vCPU VM, Linux 6.18, 8 runs of each mode, the host noisy (mode 0 with 3200
 * fds ranged 793-1370 us p50 across runs), so read the ratios within a run:
 *   3200 extra fds: modes 1 and 2 take 0.64-0.88 of mode 0's p50 (e.g. 1008 -> 647 us).
 *   No extra fds: mode 1 costs about +50 us over mode 0 (629 -> 679, 521 -> 573 us);
 *   mode 2 is within noise of mode 0.
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
    if (mode == 2) {
        syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_UNSHARE);
    } else if (mode == 1) {
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
    if (argc < 3) {
        fprintf(stderr, "usage: fd_relay EXTRA_FDS MODE(0|1|2)\n");
        return 2;
    }
    int extra = atoi(argv[1]); mode = atoi(argv[2]); int n = 400;
    if (mode < 0 || mode > 2) return 2;
    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv);
    for (int i = 0; i < extra; i++) open("/dev/null", O_RDONLY | O_CLOEXEC);
    double lat[400];
    for (int i = 0; i < n; i++) {
        double t = now();
        int p[2]; pipe2(p, O_CLOEXEC); errw = p[1];
        if (mode == 1) {
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
    static const char *name[] = {"own table, keep errpipe", "relay: CLONE_FILES+UNSHARE",
                                 "CLONE_FILES+UNSHARE, no fd"};
    printf("extra %5d %-26s p50 %4.0f us  child cpu %4.0f us\n", extra, name[mode],
           lat[n/2]*1e6, (ru.ru_utime.tv_sec*1e6+ru.ru_utime.tv_usec+ru.ru_stime.tv_sec*1e6+ru.ru_stime.tv_usec)/n);
    return 0;
}
