//! Server side: files, mmap, CLI.
