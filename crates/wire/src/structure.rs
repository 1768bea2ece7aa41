//! Structure: projections of a view's rows or columns, and token lookups.

use serde::{Deserialize, Serialize};
use tensor_surgeon_core::view::ViewSpec;

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
}

/// Points projected on their first principal components.
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
    /// Variance along each component (`s^2 / (n - 1)`).
    pub explained_variance: Vec<f64>,
    /// Its share of the total variance.
    pub explained_ratio: Vec<f64>,
    /// Unit component directions, `dims x features` (largest loading positive).
    pub components: Vec<Vec<f64>>,
    /// Coordinates, `n x dims` row-major.
    pub points: Vec<f32>,
    /// Each point's L2 norm (before normalisation).
    pub norms: Vec<f32>,
    /// The tensor index (along the points' dim) of each point.
    pub index: Vec<u64>,
    /// Token text of each point when the points index the vocabulary.
    pub labels: Vec<String>,
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
