/* timed FILE CMD ARGS...: runs CMD, waits for it and writes one line to FILE:
 *
 *     wall_ns cpu_us maxrss_kib status
 *
 * wall_ns is CLOCK_MONOTONIC from just before the fork to just after the
 * wait, so it covers the workload and nothing a tracer does before or after
 * it; cpu_us (user + system) and maxrss_kib are this process's and its
 * waited-for descendants' (getrusage RUSAGE_SELF and RUSAGE_CHILDREN);
 * status is CMD's exit status (128 + signal when it was killed).
 * `cargo xtask bench` runs every workload under it, traced or not, so every
 * contender is timed the same way, even when the tracer starts the workload
 * itself (`nixtrace record -- CMD`, `strace -f CMD`, `bpftrace -c CMD`),
 * and each can check that the workload succeeded. Exits with CMD's status. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cpu_us(const struct rusage *ru) {
    return (ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000000LL + ru->ru_utime.tv_usec +
           ru->ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: timed FILE CMD [ARGS...]\n");
        return 2;
    }
    long long start = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("timed: fork");
        return 2;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        perror("timed: waitpid");
        return 2;
    }
    long long wall = now_ns() - start;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    long maxrss = self.ru_maxrss > children.ru_maxrss ? self.ru_maxrss : children.ru_maxrss;
    FILE *out = fopen(argv[1], "w");
    if (!out || fprintf(out, "%lld %lld %ld %d\n", wall, cpu_us(&self) + cpu_us(&children), maxrss, code) < 0 ||
        fclose(out) != 0) {
        perror(argv[1]);
        return 2;
    }
    return code;
}
