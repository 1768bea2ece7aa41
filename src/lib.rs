//! Tensor Surgeon: look inside `.safetensors` model weights and change them.
//!
//! The modules at the top level are the pure core: no I/O, they compile for the server and
//! for the WASM client alike. `server` holds everything that touches files.

pub mod colormap;
pub mod demo;
pub mod dtype;
pub mod edit;
pub mod filter;
pub mod header;
pub mod index;
pub mod overlay;
pub mod patch;
pub mod slice;
pub mod view;

#[cfg(feature = "ssr")]
pub mod server;
