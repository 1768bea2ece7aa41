//! Structure: projections of a view's rows or columns (PCA at once; t-SNE and UMAP as
//! layouts that run, publish frames and stop), and token lookups (search, nearest tokens,
//! comparing two tokens).

use super::*;
use tensor_surgeon_wire::{
    LayoutFrame, Nearest, ProjectRequest, Projection, TaskProgress, TokenComparison, TokenHit,
};

/// PCA, t-SNE or UMAP of a view's rows or columns (t-SNE and UMAP: the finished layout).
/// `POST /api/project` (rkyv in and out).
#[server(endpoint = "project", input = Rkyv, output = Rkyv)]
pub async fn get_projection(request: ProjectRequest) -> Result<Projection, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.project(&request)).await
}

/// The same, JSON in and out, for scripts and agents. `POST /api/project_json`.
#[server(endpoint = "project_json", input = Json)]
pub async fn get_projection_json(request: ProjectRequest) -> Result<Projection, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.project(&request)).await
}

/// Starts a t-SNE or UMAP layout (or joins the same one running, or answers from a finished
/// one): its first frame. `POST /api/layout/start` (rkyv in and out).
#[server(endpoint = "layout/start", input = Rkyv, output = Rkyv)]
pub async fn start_layout(request: ProjectRequest) -> Result<LayoutFrame, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.start_layout(&request)).await
}

/// The newest frame of a layout; its points only when newer than `since`.
/// `GET /api/layout/frame?job=J&since=F` (rkyv out).
#[server(endpoint = "layout/frame", input = GetUrl, output = Rkyv)]
pub async fn get_layout_frame(job: u64, since: u64) -> Result<LayoutFrame, ServerFnError> {
    workbench()?
        .layout_frame(tensor_surgeon_wire::FrameRequest { job, since })
        .map_err(fail)
}

/// Stops a layout after its current step, keeping the layout it has. `POST /api/layout/stop`.
#[server(endpoint = "layout/stop", input = Json)]
pub async fn stop_layout(job: u64) -> Result<LayoutFrame, ServerFnError> {
    workbench()?.stop_layout(job).map_err(fail)
}

/// Progress of the running projection. `GET /api/project_progress`.
#[server(endpoint = "project_progress", input = GetUrl)]
pub async fn get_project_progress() -> Result<TaskProgress, ServerFnError> {
    Ok(workbench()?.project_progress())
}

/// Tokens matching a text (exact token or single-token encoding first). `GET
/// /api/tokens/search?q=TEXT`.
#[server(endpoint = "tokens/search", input = GetUrl)]
pub async fn search_tokens(q: String) -> Result<Vec<TokenHit>, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.search_tokens(&q)).await
}

/// The `k` rows most cosine-similar to `row` of a `[vocab, hidden]` tensor, edits included.
/// `GET /api/tokens/nearest?tensor=T&row=R&k=K`.
#[server(endpoint = "tokens/nearest", input = GetUrl)]
pub async fn nearest_tokens(tensor: String, row: u64, k: usize) -> Result<Nearest, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.nearest(&tensor, row, k)).await
}

/// Cosine, L2 distance and delta of two rows. `GET /api/tokens/compare?tensor=T&a=A&b=B`.
#[server(endpoint = "tokens/compare", input = GetUrl)]
pub async fn compare_tokens(
    tensor: String,
    a: u64,
    b: u64,
) -> Result<TokenComparison, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.compare_rows(&tensor, a, b)).await
}
