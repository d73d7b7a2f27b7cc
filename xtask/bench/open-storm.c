/* The open storm of `cargo xtask bench`: N open() calls (argv[1], default
 * 400000), alternating between a path under /nix/store that does not exist
 * (ENOENT, as in a library search) and /etc/hostname (opened, then closed).
 * It fails if a missing path exists or an existing one cannot be opened, so a
 * benchmark never times something else. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char MISSING[] = "/nix/store/0000000000000000000000000000bench-missing/lib/libbench.so.1";
static const char PRESENT[] = "/etc/hostname";

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 400000;
    for (long i = 0; i < n; i++) {
        if (i % 2 == 0) {
            int fd = open(MISSING, O_RDONLY);
            if (fd >= 0) {
                fprintf(stderr, "open-storm: %s exists\n", MISSING);
                return 1;
            }
        } else {
            int fd = open(PRESENT, O_RDONLY);
            if (fd < 0) {
                perror(PRESENT);
                return 1;
            }
            close(fd);
        }
    }
    return 0;
}
