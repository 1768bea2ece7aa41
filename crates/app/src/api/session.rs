//! The editing session: edits, agent proposals, undo/redo, the session patch, bakes.

use super::*;
use tensor_surgeon_wire::{BakeStatus, EditRequest, LoadOutcome, SessionView};

/// Applies an edit. `POST /api/edit`.
#[server(endpoint = "edit", input = Json)]
pub async fn edit(request: EditRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.edit(&request, &tensor_surgeon_core::origin::Origin::new("web"))).await
}

/// Accepts (applies) or rejects an agent's pending proposal. `POST /api/resolve`.
#[server(endpoint = "resolve", input = Json)]
pub async fn resolve_proposal(id: u64, accept: bool) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.resolve(id, accept)).await
}

/// Undoes the last edit. `POST /api/undo`.
#[server(endpoint = "undo", input = Json)]
pub async fn undo() -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.undo()).await
}

/// Redoes the last undone edit. `POST /api/redo`.
#[server(endpoint = "redo", input = Json)]
pub async fn redo() -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.redo()).await
}

/// The session's changed elements and history. `GET /api/session`.
#[server(endpoint = "session", input = GetUrl)]
pub async fn get_session() -> Result<SessionView, ServerFnError> {
    // Read while the page renders on the server: it must not yield to the runtime (the
    // page's reactive state lives on one thread), so it runs in place.
    Ok(workbench()?.session_view()?)
}

/// The session version once it differs from `since` (or after 20 s): a long poll, so pages see
/// changes made elsewhere within a tenth of a second without refetching the session.
/// `GET /api/session/changed?since=V`.
#[server(endpoint = "session/changed", input = GetUrl)]
pub async fn session_changed(since: u64) -> Result<u64, ServerFnError> {
    let wb = workbench()?;
    Ok(wb
        .changed_since(since, std::time::Duration::from_secs(20))
        .await)
}

/// Saves the session patch into the patches folder; returns its path. `POST /api/save_patch`.
#[server(endpoint = "save_patch", input = Json)]
pub async fn save_patch(name: String, note: String) -> Result<String, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.save_patch(&name, &note)).await
}

/// Verifies a patch (JSON text) and, if it applies cleanly, applies it as one edit.
/// `POST /api/load_patch`.
#[server(endpoint = "load_patch", input = Json)]
pub async fn load_patch(text: String, name: Option<String>) -> Result<LoadOutcome, ServerFnError> {
    let name = name.unwrap_or_else(|| "uploaded patch".into());
    let wb = workbench()?;
    blocking(move || wb.load_patch(&text, &name)).await
}

/// Starts baking the session patch into `file_name` in the output folder. `POST /api/bake`.
#[server(endpoint = "bake", input = Json)]
pub async fn start_bake(file_name: String) -> Result<BakeStatus, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.start_bake(&file_name)).await
}

/// Progress of the running (or last) bake. `GET /api/bake_status`.
#[server(endpoint = "bake_status", input = GetUrl)]
pub async fn get_bake_status() -> Result<BakeStatus, ServerFnError> {
    Ok(workbench()?.bake_status())
}
