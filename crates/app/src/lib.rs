// The engine's errors carry structured context for messages a user can act on; they are rare
// and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
#![recursion_limit = "256"]
//! Tensor Surgeon's web app: the Leptos components (one file per panel), the URL state, and
//! the server functions. Components hold UI state only; anything computable from data lives
//! in `tensor-surgeon-core`. With the `ssr` feature the server functions call the engine;
//! with `hydrate` the same components run in the browser.

pub mod api;
pub mod ui;
pub mod urlstate;

pub use ui::{shell, App};
