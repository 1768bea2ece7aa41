//! Structure: PCA projections of a view's rows or columns, and token lookups (search,
//! nearest tokens, comparing two tokens).

use super::*;
use tensor_surgeon_wire::{
    Nearest, ProjectRequest, Projection, TaskProgress, TokenComparison, TokenHit,
};

/// PCA of a view's rows or columns. `POST /api/project` (rkyv in and out).
#[server(endpoint = "project", input = Rkyv, output = Rkyv)]
pub async fn get_projection(request: ProjectRequest) -> Result<Projection, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.project(&request)).await
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
