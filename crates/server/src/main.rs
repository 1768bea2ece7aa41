// The engine's errors carry structured context for messages a user can act on; they are rare
// and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
//! The `tensor-surgeon` binary: the command line, the web server (axum host of the Leptos
//! app, with its request guards) and the MCP host. The work itself is the engine's.

mod auth;
mod cli;
mod mcp;
mod session;
mod web;

fn main() -> std::process::ExitCode {
    // Output piped into `head` and closed early ends the program quietly, like other Unix
    // tools, instead of a panic on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
