/* The programs of the Nix fixture (default.nix): each needs libgreet.so.1,
 * libz.so.1 and libc.so.6, found through its RUNPATH in the store. */
#include <stdio.h>

const char *greet(void);
const char *zlibVersion(void);

int main(void) {
    printf("%s; zlib %s\n", greet(), zlibVersion());
    return 0;
}
