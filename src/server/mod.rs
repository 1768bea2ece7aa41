//! Server side: the mmap store, bakes, file I/O and the command line.

pub mod bake;
pub mod cli;
pub mod error;
pub mod files;
pub mod patches;
pub mod store;

pub use error::{Error, Result};
pub use store::Model;
