/* A program that does nothing, built with a long RUNPATH of directories
 * that do not exist (xtask/src/bench/startup.rs): the dynamic loader looks
 * for libc.so.6 in each of them before it finds it, as a store program
 * with a long RUNPATH does, and nixtrace records every failed open. */
int main(void) {
    return 0;
}
