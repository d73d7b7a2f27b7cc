/* The libraries of the padding-* packages of the Nix fixture (default.nix):
 * store paths on the programs' RUNPATH that hold nothing they need. */
int PADDING_SYMBOL(void) {
    return 0;
}
