/* Does CLONE_FILES + close_range(3, ~0, CLOSE_RANGE_UNSHARE) take the parent's fd count out of
 * a spawn's cost?  Issue 6, workload b at 8x: every child copies the parent's fd table and
 * closes it again, so with many fds open (a pidfd per live child, a server's sockets) each
 * spawn costs more.  With CLOSE_RANGE_UNSHARE on a shared table, the kernel copies only the
 * fds below the range (fs/file.c, __close_range), so nothing above 2 is copied or closed.
 *
 * Not part of make bench: a probe for the next step.  Build and run:
 *   cc -O2 -o /tmp/clone_files benches/probes/clone_files.c
 *   for e in 0 3200; do for m in 0 1; do /tmp/clone_files $e $m; done; done
 * argv[1]: extra fds to hold open; argv[2]: 0 = the child's own table + close_range (what
 * rsubprocess and CPython do), 1 = CLONE_FILES + CLOSE_RANGE_UNSHARE.  400 sequential
 * vfork-style spawns of /bin/true; prints p50 latency and CPU per child.
 *
 * 2026-12-02, 2-vCPU VM, Linux 6.18, two runs: with 3200 extra fds, 945 and 793 us p50
 * (child CPU 884 and 770 us) -> 620 and 622 us (621 and 567 us); with none, 504-591 us.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/close_range.h>
static int mode;
static char stack[256*1024];
static int child(void *arg) {
    (void)arg;
    syscall(SYS_close_range, 3, ~0U, mode ? CLOSE_RANGE_UNSHARE : 0);
    char *argv[] = {"/bin/true", NULL}, *envp[] = {NULL};
    syscall(SYS_execve, "/bin/true", argv, envp);
    syscall(SYS_exit, 127);
    return 0;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: clone_files EXTRA_FDS MODE(0|1)\n");
        return 2;
    }
    int extra = atoi(argv[1]); mode = atoi(argv[2]); int n = 400;
    for (int i = 0; i < extra; i++) open("/dev/null", O_RDONLY | O_CLOEXEC);
    double lat[400];
    for (int i = 0; i < n; i++) {
        double t = now();
        int flags = CLONE_VM | CLONE_VFORK | SIGCHLD | (mode ? CLONE_FILES : 0);
        pid_t pid = clone(child, stack + sizeof stack, flags, NULL);
        int st; waitpid(pid, &st, 0);
        lat[i] = now() - t;
        if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "bad status\n"); return 1; }
    }
    qsort(lat, n, sizeof *lat, cmp);
    struct rusage ru; getrusage(RUSAGE_CHILDREN, &ru);
    printf("extra %5d %-22s p50 %4.0f us  child cpu %4.0f us\n", extra, mode ? "CLONE_FILES+UNSHARE" : "own table+close_range",
           lat[n/2]*1e6, (ru.ru_utime.tv_sec*1e6+ru.ru_utime.tv_usec+ru.ru_stime.tv_sec*1e6+ru.ru_stime.tv_usec)/n);
    return 0;
}
