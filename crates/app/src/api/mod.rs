//! The server functions, each at a fixed endpoint under `/api/` (listed in the README). Each
//! is a thin adapter: take the workbench from context, call it off the async workers, map
//! the error. The shapes they exchange are `tensor_surgeon_wire`'s.

use leptos::prelude::*;
use leptos::server_fn::codec::{GetUrl, Json, Rkyv};
use tensor_surgeon_wire::{CellData, ModelSummary, RemoteRead, ViewData, ViewRequest};

mod adapters;
mod analysis;
mod run;
mod session;
mod structure;
mod surgery;
pub use adapters::*;
pub use analysis::*;
pub use run::*;
pub use session::*;
pub use structure::*;
pub use surgery::*;

/// The session the server functions work on, provided by the host.
#[cfg(feature = "ssr")]
fn workbench() -> Result<std::sync::Arc<tensor_surgeon_engine::workbench::Workbench>, ServerFnError>
{
    use_context::<std::sync::Arc<tensor_surgeon_engine::workbench::Workbench>>()
        .ok_or_else(|| ServerFnError::new("server state missing"))
}

/// The error as the response: its message, with the HTTP status of its kind.
#[cfg(feature = "ssr")]
fn fail(e: tensor_surgeon_engine::Error) -> ServerFnError {
    use http::StatusCode;
    use tensor_surgeon_engine::error::ErrorKind;
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(status);
    }
    ServerFnError::new(format!("{e}{}", host_words(&e)))
}

/// What the web host adds to an error it caused by how it was started.
#[cfg(feature = "ssr")]
fn host_words(e: &tensor_surgeon_engine::Error) -> &'static str {
    match e {
        tensor_surgeon_engine::Error::ReadOnly => " (the server was started with --read-only)",
        tensor_surgeon_engine::Error::TooLarge { .. } => " (the server's --max-edit-bytes)",
        _ => "",
    }
}

/// Runs blocking work (mmap reads, fsyncs, bakes) off the async workers.
#[cfg(feature = "ssr")]
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> tensor_surgeon_engine::Result<T> + Send + 'static,
) -> Result<T, ServerFnError> {
    tensor_surgeon_engine::blocking(f).await.map_err(fail)
}

/// Long reads from a remote model under way (URL, bytes read, bytes to read): what a view
/// that waits is waiting for. `GET /api/remote_reads`.
#[server(endpoint = "remote_reads", input = GetUrl)]
pub async fn remote_reads() -> Result<Vec<RemoteRead>, ServerFnError> {
    Ok(workbench()?.remote_reads())
}

/// The model summary and tensor list. `GET /api/model`.
#[server(endpoint = "model", input = GetUrl)]
pub async fn get_model() -> Result<ModelSummary, ServerFnError> {
    Ok(workbench()?.summary())
}

/// Heatmap data for a view. `POST /api/view` (rkyv in and out).
#[server(endpoint = "view", input = Rkyv, output = Rkyv)]
pub async fn get_view(request: ViewRequest) -> Result<ViewData, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.view(&request)).await
}

/// The same view for scripts and agents: `POST /api/view_json` (JSON in and out; the page
/// uses the binary `/api/view`).
#[server(endpoint = "view_json", input = Json)]
pub async fn get_view_json(request: ViewRequest) -> Result<ViewData, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.view(&request)).await
}

/// One element's exact value and bytes. `GET /api/cell?tensor=NAME&index=1,2`.
#[server(endpoint = "cell", input = GetUrl)]
pub async fn get_cell(tensor: String, index: String) -> Result<CellData, ServerFnError> {
    let index = index
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            fail(tensor_surgeon_engine::Error::Usage(format!(
                "index {index:?} is not a list of whole numbers"
            )))
        })?;
    // Read while the page renders on the server (a selected cell): runs in place, like
    // `get_session`.
    workbench()?.cell(&tensor, &index).map_err(fail)
}
