//! The layouts' error: parameters out of range, views a layout cannot use, a stop.

use tensor_surgeon_core::error_kind::ErrorKind;

/// Why a layout could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A parameter out of its range; the message says which and why.
    #[error("{0}")]
    Parameter(String),
    /// Too few points for the method.
    #[error("a {method} layout needs at least 4 points; the view has {points}")]
    TooFewPoints { method: &'static str, points: usize },
    /// A view too small to project.
    #[error("a projection needs at least 2 points; the view has {rows} x {cols}")]
    TooSmall { rows: usize, cols: usize },
    /// NaN or Inf among the values.
    #[error("the view holds NaN or Inf values: no projection (the scan finds them)")]
    NonFinite,
    /// The SVD did not converge.
    #[error("the SVD did not converge: {0}")]
    NoConvergence(String),
    /// Work the user stopped before it had anything to show.
    #[error("stopped before the first layout")]
    Stopped,
    /// The optimiser's thread could not start.
    #[error("cannot start the t-SNE thread: {0}")]
    Thread(#[source] rayon::ThreadPoolBuildError),
    /// The optimiser stopped unexpectedly (a panic inside it): a bug, reported.
    #[error("t-SNE failed: {0}")]
    Failed(String),
}

impl LayoutError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LayoutError::Thread(_) | LayoutError::Failed(_) => ErrorKind::Internal,
            LayoutError::Parameter(_)
            | LayoutError::TooFewPoints { .. }
            | LayoutError::TooSmall { .. }
            | LayoutError::NonFinite
            | LayoutError::NoConvergence(_)
            | LayoutError::Stopped => ErrorKind::Invalid,
        }
    }
}

/// The layouts' result.
pub type Result<T, E = LayoutError> = std::result::Result<T, E>;
