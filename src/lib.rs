#![recursion_limit = "256"]
// Errors carry structured context (tensor, dim, asked, size) for messages a user can act on;
// they are rare and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
//! Tensor Surgeon: look inside `.safetensors` model weights and change them.
//!
//! The modules at the top level are the pure core: no I/O, they compile for the server and
//! for the WASM client alike. `server` holds everything that touches files.

pub mod cluster;
pub mod colormap;
pub mod demo;
pub mod dtype;
pub mod edit;
pub mod filter;
pub mod header;
pub mod index;
pub mod overlay;
pub mod patch;
pub mod region;
pub mod scatter;
pub mod slice;
pub mod stats;
pub mod units;
pub mod urlstate;
pub mod view;

#[cfg(feature = "ssr")]
pub mod server;

/// The web app's API (shared types and server functions) and its components.
pub mod api;
pub mod ui;

/// The WASM entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(ui::App);
}
