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
    // candle runs its element-wise operations on a pool of its own, whose workers spin before
    // they sleep; the products that take the time run in our kernels on rayon's threads, and
    // the second pool only contends with them for the cores (a causal trace ran 13% and a fact
    // edit 17% slower with it on two cores). Element-wise operations stay on the calling
    // thread unless the user chose otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    cli::main()
}
