/* libgreet.so.1, a library of the Nix fixture (default.nix), built twice
 * (greet-1.0 and greet-2.0) with the same soname and different contents.
 * It needs libz.so.1, which its own RUNPATH finds in the store. */
#include <stdio.h>

const char *zlibVersion(void);

const char *greet(void) {
    static char text[80];
    snprintf(text, sizeof text, "libgreet %s on zlib %s", GREET_VERSION, zlibVersion());
    return text;
}
