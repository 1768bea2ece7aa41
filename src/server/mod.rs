//! Server side: the mmap store, bakes, file I/O, the web server and the command line.

pub mod analysis;
pub mod bake;
pub mod cli;
pub mod error;
pub mod files;
pub mod journal;
pub mod mcp;
pub mod patches;
pub mod project;
pub mod store;
pub mod tokens;
pub mod web;
pub mod workbench;

pub use error::{Error, Result};
pub use store::Model;
