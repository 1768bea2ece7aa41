//! The `tensor-surgeon` binary: the command line (and, later, the web server).

fn main() -> std::process::ExitCode {
    tensor_surgeon::server::cli::main()
}
