// Errors carry structured context (tensor, dim, asked, size) for messages a user can act on;
// they are rare and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
//! The pure core of Tensor Surgeon: everything about `.safetensors` weights that can be
//! computed without touching a file. No I/O, no async, no web framework: the same code runs
//! in the server, the command line and the WASM client.
//!
//! ```
//! use tensor_surgeon_core::dtype::{self, Dtype, EncodeOptions};
//! let number = dtype::parse_number("1.5").unwrap();
//! let bytes = dtype::encode(Dtype::BF16, number, EncodeOptions::default()).unwrap();
//! assert_eq!(bytes, [0xc0, 0x3f]);
//! assert_eq!(dtype::format_element(Dtype::BF16, &bytes), "1.5");
//! ```

pub mod change;
pub mod cluster;
pub mod colormap;
pub mod demo;
pub mod dtype;
pub mod edit;
pub mod error_kind;
pub mod filter;
pub mod gguf;
pub mod header;
pub mod index;
pub mod origin;
pub mod overlay;
pub mod overview;
pub mod packed;
pub mod patch;
pub mod region;
pub mod scatter;
pub mod slice;
pub mod source;
pub mod stats;
pub mod tensors;
pub mod units;
pub mod view;
