//! Structure: projections of a view's rows or columns, and token lookups.

use serde::{Deserialize, Serialize};
use tensor_surgeon_core::view::ViewSpec;

/// How points are laid out.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Principal components: linear, exact, instant.
    #[default]
    Pca,
    /// t-SNE: neighbourhoods kept, distances between clusters not.
    Tsne,
    /// UMAP: neighbourhoods kept, some global structure too.
    Umap,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Pca => "PCA",
            Method::Tsne => "t-SNE",
            Method::Umap => "UMAP",
        }
    }
}

/// How a nonlinear layout starts.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// t-SNE: PCA; UMAP: spectral (the references' defaults).
    #[default]
    Auto,
    Pca,
    /// The leading eigenvectors of the neighbour graph (UMAP only).
    Spectral,
    /// Random, from the seed.
    Random,
}

/// Parameters of t-SNE and UMAP (PCA ignores them). Defaults are the references' own
/// (openTSNE, umap-learn).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(default)]
pub struct LayoutParams {
    /// t-SNE: the effective number of neighbours (3 x perplexity are found).
    pub perplexity: f64,
    /// t-SNE: the attraction factor of the first phase.
    pub early_exaggeration: f64,
    /// t-SNE: `None` is "auto", per phase as openTSNE: points / exaggeration (at least
    /// 200) while exaggerating, points (at least 200) after.
    pub learning_rate: Option<f64>,
    /// Optimisation steps: `None` is t-SNE 750 (250 exaggerated), UMAP 500 up to 10,000
    /// points and 200 above.
    pub iterations: Option<u32>,
    /// UMAP: neighbours per point.
    pub n_neighbors: u32,
    /// UMAP: how tightly points may pack.
    pub min_dist: f64,
    pub init: Init,
    /// The same seed gives the same layout.
    pub seed: u64,
    /// Reduce to this many principal components first (0: use every feature).
    pub pca_dims: u32,
    /// 3-D t-SNE: optimise on every core, sooner but not reproducible bit for bit (the
    /// Barnes-Hut optimiser's parallel sums change order from run to run). Off: the same seed
    /// gives the same layout. 2-D t-SNE and UMAP always use every core and stay reproducible.
    pub parallel: bool,
}

impl Default for LayoutParams {
    fn default() -> Self {
        LayoutParams {
            perplexity: 30.0,
            early_exaggeration: 12.0,
            learning_rate: None,
            iterations: None,
            n_neighbors: 15,
            min_dist: 0.1,
            init: Init::Auto,
            seed: 0,
            pca_dims: 50,
            parallel: false,
        }
    }
}

/// A projection request: the points are the rows (or columns) of a 2-D view.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ProjectRequest {
    pub tensor: String,
    pub spec: ViewSpec,
    /// Points are the view's columns.
    pub columns: bool,
    /// 2 or 3 components.
    pub dims: u32,
    /// Unit-norm points before centring.
    pub normalize: bool,
    #[serde(default)]
    pub method: Method,
    #[serde(default)]
    pub params: LayoutParams,
}

/// Points projected on their first principal components, or laid out by t-SNE or UMAP.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Projection {
    /// Points.
    pub n: u64,
    /// Components.
    pub dims: u32,
    pub method: Method,
    /// PCA: variance along each component (`s^2 / (n - 1)`).
    pub explained_variance: Vec<f64>,
    /// PCA: its share of the total variance.
    pub explained_ratio: Vec<f64>,
    /// PCA: unit component directions, `dims x features` (largest loading positive).
    pub components: Vec<Vec<f64>>,
    /// Coordinates, `n x dims` row-major.
    pub points: Vec<f32>,
    /// Each point's L2 norm (before normalisation).
    pub norms: Vec<f32>,
    /// The tensor index (along the points' dim) of each point.
    pub index: Vec<u64>,
    /// Token text of each point when the points index the vocabulary.
    pub labels: Vec<String>,
    /// t-SNE and UMAP: optimisation steps done, of how many.
    pub iterations: u32,
    pub total_iterations: u32,
    /// t-SNE: KL divergence; UMAP: fuzzy cross-entropy per edge (both estimated).
    pub loss: Option<f64>,
    /// Stopped before the last step (the layout as it was then).
    pub stopped: bool,
}

/// A finished layout as `tensor-surgeon project --json` prints it: the projection, each
/// point's coordinates and token, and how long its phases took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayoutReport {
    pub tensor: String,
    pub method: Method,
    pub n: u64,
    pub dims: u32,
    pub iterations: u32,
    pub loss: Option<f64>,
    /// Seconds from the start to the first drawable frame (t-SNE, UMAP).
    pub first_frame_seconds: Option<f64>,
    /// Each phase (reading, reducing, neighbours, optimising) and the second it started.
    pub phase_started_seconds: Vec<(String, f64)>,
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    pub components: Vec<Vec<f64>>,
    /// Coordinates, one list of `dims` per point.
    pub points: Vec<Vec<f32>>,
    /// Token text of each point, when the points index the vocabulary.
    pub labels: Option<Vec<Option<String>>>,
}

/// A running (or finished) t-SNE or UMAP layout, as the page polls it.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct LayoutFrame {
    /// The job this frame is of.
    pub job: u64,
    /// Frames published so far (a newer frame has a larger number).
    pub frame: u64,
    /// What it is doing: "reading", "reducing", "neighbours", "optimising", "done".
    pub phase: String,
    pub running: bool,
    pub error: Option<String>,
    /// The layout so far: its points only when the frame is newer than the one asked
    /// after, index and labels only in the first frame a page asks for.
    pub layout: Projection,
}

/// Which frame of which layout a page has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRequest {
    pub job: u64,
    /// The frame the page has (0: none).
    pub since: u64,
}

/// A token found by text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenHit {
    pub id: u64,
    pub token: String,
}

/// A row similar to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbor {
    pub row: u64,
    pub token: Option<String>,
    pub cosine: f64,
}

/// The nearest rows of one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nearest {
    pub tensor: String,
    pub row: u64,
    pub token: Option<String>,
    pub neighbors: Vec<Neighbor>,
}

/// Two rows compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenComparison {
    pub tensor: String,
    pub a: u64,
    pub b: u64,
    pub a_token: Option<String>,
    pub b_token: Option<String>,
    pub cosine: f64,
    pub l2: f64,
    /// `row b - row a`, element by element.
    pub delta: Vec<f64>,
}
