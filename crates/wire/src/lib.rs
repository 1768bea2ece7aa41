//! Every shape that crosses a boundary of Tensor Surgeon: the HTTP API's requests and
//! responses (JSON, or rkyv for the bulk ones), shared by the server and the WASM client.
//! Logic lives in `tensor-surgeon-core`; these are plain records.
//!
//! ```
//! let row: tensor_surgeon_wire::TensorRow = serde_json::from_str(
//!     r#"{"name": "w", "dtype": "BF16", "shape": [2, 3], "bytes": 12, "file": "model.safetensors"}"#,
//! ).unwrap();
//! assert_eq!(row.shape, [2, 3]);
//! ```

mod adapter;
mod analysis;
mod fact;
/// The MCP tools' arguments, with JSON schemas for the agents that call them.
#[cfg(feature = "schema")]
pub mod mcp;
mod model;
mod run;
mod session;
mod structure;
mod surgery;
mod trace;

pub use adapter::*;
pub use analysis::*;
pub use fact::*;
pub use model::*;
pub use run::*;
pub use session::*;
pub use structure::*;
pub use surgery::*;
pub use trace::*;
