/*
 * Test workload for nixtrace's integration tests (tests/record.rs, tests/report.rs).
 *
 * Performs a known sequence of syscalls selected by argv[1], so the tests can
 * assert exactly what a trace of it must contain:
 *
 *   files DIR      opens, mmaps and a failed exec under DIR, then exit(3)
 *   chain N        fork+exec itself N levels deep; exits 7 + N
 *   threads        two threads each open /dev/null; exit 0
 *   sleep SECS     sleep, exit 0
 *   opens N PATH   openat(PATH) N times, exit 0
 *   cpu MS SLEEP OUT  burn MS of CPU, sleep SLEEP ms, write getrusage's
 *                     user+system time in ns to OUT
 *   dlopen LIB     dlopen(LIB) after startup, as a plugin is loaded; exit 0
 *
 * Any step that does not behave as the test expects exits with a distinct
 * code >= 80 (see `fail`), so a broken environment is told apart from a
 * broken tracer.
 *
 * Build: cc -O1 -pthread -o workload tests/workload.c
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_open
#error "the files workload needs the legacy open(2) syscall (x86_64)"
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* Exit codes for unexpected behaviour of the environment. */
enum {
    FAIL_USAGE = 80,
    FAIL_OPEN = 81,
    FAIL_MISSING_EXISTS = 82,
    FAIL_CHDIR = 83,
    FAIL_OPENAT2 = 84,
    FAIL_FORK = 85,
    FAIL_EXEC = 86,
    FAIL_THREAD = 87,
    FAIL_FD_REUSE = 90,
    FAIL_MMAP = 91,
    FAIL_DUP = 92,
    FAIL_EXEC_ERRNO = 93,
};

static void fail(int code, const char *what)
{
    fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
    _exit(code);
}

static char *join(const char *dir, const char *name)
{
    char *path;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        fail(FAIL_USAGE, "asprintf");
    return path;
}

/* Opens that must succeed. */
static int must_openat(int dfd, const char *path, int flags)
{
    int fd = openat(dfd, path, flags);
    if (fd < 0)
        fail(FAIL_OPEN, path);
    return fd;
}

/* Opens that must fail with ENOENT. */
static void must_be_missing(int dfd, const char *path)
{
    int fd = openat(dfd, path, O_RDONLY);
    if (fd >= 0 || errno != ENOENT)
        fail(FAIL_MISSING_EXISTS, path);
}

static void *must_mmap(size_t len, int prot, int flags, int fd)
{
    void *p = mmap(NULL, len, prot, flags, fd, 0);
    if (p == MAP_FAILED)
        fail(FAIL_MMAP, "mmap");
    return p;
}

static int files(const char *dir)
{
    char *exists = join(dir, "exists");
    char *missing = join(dir, "missing");
    char *sub = join(dir, "sub");
    char *inner = join(dir, "sub/inner");

    /* 1. Legacy open(2), not turned into openat by libc. */
    int fd = (int)syscall(SYS_open, exists, O_RDONLY);
    if (fd < 0)
        fail(FAIL_OPEN, exists);
    close(fd);

    /* 2. Absolute openat that fails. */
    must_be_missing(AT_FDCWD, missing);

    /* 3. Relative to the cwd. */
    if (chdir(dir) != 0)
        fail(FAIL_CHDIR, dir);
    close(must_openat(AT_FDCWD, "exists", O_RDONLY));

    /* 4. Relative to a directory fd. */
    int d = must_openat(AT_FDCWD, sub, O_RDONLY | O_DIRECTORY);
    close(must_openat(d, "inner", O_RDONLY));
    must_be_missing(d, "nope");
    close(d);

    /* 5. openat2. */
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, exists, &how, sizeof how);
    if (fd < 0)
        fail(FAIL_OPENAT2, exists);
    close(fd);

    /* 6. fd reuse: the mmap must name the file the fd refers to now. */
    int a = must_openat(AT_FDCWD, exists, O_RDONLY);
    close(a);
    int b = must_openat(AT_FDCWD, inner, O_RDONLY);
    if (b != a) {
        fprintf(stderr, "workload: fd not reused (%d then %d)\n", a, b);
        _exit(FAIL_FD_REUSE);
    }
    must_mmap(4096, PROT_READ, MAP_PRIVATE, b);

    /* 7. The file behind a dup'ed fd whose original is closed. */
    if (dup2(b, 100) != 100)
        fail(FAIL_DUP, "dup2");
    close(b);
    must_mmap(4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, 100);

    /* 8. Anonymous maps: only the executable one is recorded. */
    must_mmap(8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    must_mmap(4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1);

    /* 9. An exec that fails. */
    char *const exec_argv[] = {"/nonexistent/nixtrace-test-prog", NULL};
    char *const exec_envp[] = {NULL};
    execve(exec_argv[0], exec_argv, exec_envp);
    if (errno != ENOENT)
        fail(FAIL_EXEC_ERRNO, exec_argv[0]);

    /* 10. */
    exit(3);
}

static int chain(const char *self, int depth)
{
    if (depth == 0)
        return 7;
    pid_t child = fork();
    if (child < 0)
        fail(FAIL_FORK, "fork");
    if (child == 0) {
        char next[16];
        snprintf(next, sizeof next, "%d", depth - 1);
        char *const argv[] = {(char *)self, "chain", next, NULL};
        execv(self, argv);
        fail(FAIL_EXEC, self);
    }
    int status;
    if (waitpid(child, &status, 0) != child)
        fail(FAIL_FORK, "waitpid");
    if (!WIFEXITED(status))
        return 126;
    return WEXITSTATUS(status) + 1;
}

static void *open_dev_null(void *unused)
{
    (void)unused;
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int threads(void)
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, open_dev_null, NULL) != 0)
            fail(FAIL_THREAD, "pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return 0;
}

static int opens(int n, const char *path)
{
    for (int i = 0; i < n; i++) {
        int fd = openat(AT_FDCWD, path, O_RDONLY);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}

static long long cputime_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Burns `cpu_ms` of CPU time, sleeps `sleep_ms`, then writes the process's
 * own user + system time (getrusage, in ns) to `out`. */
static int cpu(int cpu_ms, int sleep_ms, const char *out)
{
    long long start = cputime_ns();
    while (cputime_ns() - start < cpu_ms * 1000000LL)
        ;
    struct timespec pause = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    long long used = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000000LL +
                     (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1000LL;
    FILE *f = fopen(out, "w");
    if (!f)
        fail(FAIL_USAGE, "fopen");
    fprintf(f, "%lld\n", used);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (strcmp(mode, "files") == 0 && argc == 3)
        return files(argv[2]);
    if (strcmp(mode, "chain") == 0 && argc == 3) {
        if (argv[0][0] != '/') {
            fprintf(stderr, "workload: chain needs an absolute argv[0]\n");
            return FAIL_USAGE;
        }
        return chain(argv[0], atoi(argv[2]));
    }
    if (strcmp(mode, "threads") == 0 && argc == 2)
        return threads();
    if (strcmp(mode, "sleep") == 0 && argc == 3) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    if (strcmp(mode, "opens") == 0 && argc == 4)
        return opens(atoi(argv[2]), argv[3]);
    if (strcmp(mode, "cpu") == 0 && argc == 5)
        return cpu(atoi(argv[2]), atoi(argv[3]), argv[4]);
    if (strcmp(mode, "dlopen") == 0 && argc == 3) {
        if (!dlopen(argv[2], RTLD_NOW))
            fail(FAIL_USAGE, dlerror());
        return 0;
    }

    fprintf(stderr,
            "usage: workload files DIR | chain N | threads | sleep SECS | opens N PATH | cpu MS SLEEP_MS OUT"
            " | dlopen LIB\n");
    return FAIL_USAGE;
}
