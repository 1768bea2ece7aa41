//! The `tensor-surgeon` binary: the command line and the web server.

fn main() -> std::process::ExitCode {
    // Output piped into `head` and closed early ends the program quietly, like other Unix
    // tools, instead of a panic on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tensor_surgeon::server::cli::main()
}
