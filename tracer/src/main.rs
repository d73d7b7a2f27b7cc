//! The `nixtrace` binary: everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    nixtrace::main()
}
