//! Projections and token-aware lookups for the web session (edits included).

use super::{lock, Workbench};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_infer::tokens::{self, Vocab};
use tensor_surgeon_layout::{self as project, Input};
use tensor_surgeon_wire::{
    Nearest, ProjectRequest, Projection, TaskProgress, TokenComparison, TokenHit,
};

/// Row norms per tensor, with the edit version they were computed at.
type NormCache = HashMap<String, (u64, Arc<Vec<f32>>)>;

/// Token search results returned.
const SEARCH_LIMIT: usize = 20;
/// Most neighbours a query may ask for.
const MAX_K: usize = 1000;

/// Progress of the running projection (in passes over the data), and the row norms of
/// vocabulary matrices per (tensor, edit version), so a nearest-token query after the first
/// only computes dot products.
#[derive(Default)]
pub(super) struct ProjectProgress {
    running: AtomicU64,
    done: AtomicU64,
    total: AtomicU64,
    norms: Mutex<NormCache>,
}

impl Workbench {
    /// The tokenizer, when the model has one.
    pub fn vocab(&self) -> Option<&Arc<Vocab>> {
        self.vocab.as_ref()
    }

    fn need_vocab(&self) -> Result<&Arc<Vocab>> {
        self.vocab.as_ref().ok_or_else(|| {
            Error::Usage(
                "no tokenizer: put tokenizer.json beside the model or start with --tokenizer PATH"
                    .into(),
            )
        })
    }

    /// The token text of index `i` along a dim of `size` (when that dim indexes the vocabulary).
    pub fn token_label(&self, size: u64, i: u64) -> Option<String> {
        crate::services::token_label(self.vocab.as_deref(), size, i)
    }

    /// The vocabulary matrix token lookups use by default: an embedding if there is one.
    pub fn vocab_tensor(&self) -> Option<String> {
        let v = self.vocab.as_ref()?;
        let candidates: Vec<&TensorInfo> = self
            .model
            .tensors()
            .map(|(_, t)| t)
            .filter(|t| t.shape.len() == 2 && v.indexes(t.shape[0]))
            .collect();
        candidates
            .iter()
            .find(|t| t.name.contains("embed"))
            .or(candidates.first())
            .map(|t| t.name.clone())
    }

    /// PCA, t-SNE or UMAP of a view's rows or columns, edits included (t-SNE and UMAP:
    /// waiting for the layout to finish).
    pub fn project(self: &Arc<Self>, req: &ProjectRequest) -> Result<Projection> {
        if req.method != tensor_surgeon_wire::Method::Pca {
            return self.layout_blocking(req);
        }
        let (shard, info) = self.model.get(&req.tensor)?;
        if info.shape.len() < 2 {
            return Err(Error::Usage(format!(
                "{} is {}-D: projections need a 2-D view",
                info.name,
                info.shape.len()
            )));
        }
        let spec = req.spec.clone().make_valid(&info.shape);
        let overlay = lock(&self.session).history.overlay().only(&info.name);
        let base = shard.data(info)?;
        let source = overlay.view(info, &*base);
        let input = Input {
            dtype: info.dtype,
            shape: &info.shape,
            spec: spec.clone(),
            source: &source,
            columns: req.columns,
            normalize: req.normalize,
        };
        let p = &self.projecting;
        p.running.store(1, Ordering::Relaxed);
        let result = project::project(&input, req.dims as usize, &|done, total| {
            p.done.store(done, Ordering::Relaxed);
            p.total.store(total, Ordering::Relaxed);
        });
        p.running.store(0, Ordering::Relaxed);
        let mut out = result?;
        let dim = if req.columns { spec.x_dim } else { spec.y_dim };
        if let Some(d) = dim {
            let size = info.shape[d as usize];
            if self.token_label(size, 0).is_some() {
                out.labels = out
                    .index
                    .iter()
                    .map(|&i| self.token_label(size, i).unwrap_or_default())
                    .collect();
            }
        }
        Ok(out)
    }

    /// Progress of the running projection (passes over the data).
    pub fn project_progress(&self) -> TaskProgress {
        let p = &self.projecting;
        TaskProgress {
            running: p.running.load(Ordering::Relaxed) == 1,
            what: "projection".into(),
            done: p.done.load(Ordering::Relaxed),
            total: p.total.load(Ordering::Relaxed),
        }
    }

    /// Tokens matching a text.
    pub fn search_tokens(&self, text: &str) -> Result<Vec<TokenHit>> {
        Ok(self.need_vocab()?.search(text, SEARCH_LIMIT))
    }

    /// A 2-D tensor's info and its rows read through the overlay.
    fn matrix(
        &self,
        tensor: &str,
    ) -> Result<(
        tensor_surgeon_core::overlay::Overlay,
        &TensorInfo,
        tensor_surgeon_store::model::Bytes<'_>,
    )> {
        let (shard, info) = self.model.get(tensor)?;
        if info.shape.len() != 2 {
            return Err(Error::Usage(format!(
                "{} has shape {:?}: row comparisons need a [rows, hidden] matrix",
                info.name, info.shape
            )));
        }
        let overlay = lock(&self.session).history.overlay().only(&info.name);
        Ok((overlay, info, shard.data(info)?))
    }

    /// The `k` rows most similar to `row` (cosine), edits included.
    pub fn nearest(&self, tensor: &str, row: u64, k: usize) -> Result<Nearest> {
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::Usage(format!("k must be 1 to {MAX_K}; got {k}")));
        }
        let (overlay, info, base) = self.matrix(tensor)?;
        let version = lock(&self.session).tensor_version(&info.name);
        let source = overlay.view(info, &*base);
        let (rows, cols) = (info.shape[0], info.shape[1]);
        let cached = lock(&self.projecting.norms)
            .get(&info.name)
            .filter(|(v, _)| *v == version)
            .map(|(_, n)| Arc::clone(n));
        let (mut neighbors, computed) = tokens::nearest(
            info.dtype,
            rows,
            cols,
            &source,
            row,
            k,
            cached.as_deref().map(Vec::as_slice),
        )?;
        if let Some(n) = computed {
            lock(&self.projecting.norms).insert(info.name.clone(), (version, Arc::new(n)));
        }
        for n in &mut neighbors {
            n.token = self.token_label(rows, n.row);
        }
        Ok(Nearest {
            tensor: info.name.clone(),
            row,
            token: self.token_label(rows, row),
            neighbors,
        })
    }

    /// Cosine, L2 distance and delta of rows `a` and `b`, edits included.
    pub fn compare_rows(&self, tensor: &str, a: u64, b: u64) -> Result<TokenComparison> {
        let (overlay, info, base) = self.matrix(tensor)?;
        let source = overlay.view(info, &*base);
        let (rows, cols) = (info.shape[0], info.shape[1]);
        for r in [a, b] {
            if r >= rows {
                return Err(Error::Usage(format!(
                    "row {r} is out of range ({} has {rows} rows)",
                    info.name
                )));
            }
        }
        let c = tokens::compare_rows(info.dtype, cols, &source, a, b);
        Ok(TokenComparison {
            tensor: info.name.clone(),
            a,
            b,
            a_token: self.token_label(rows, a),
            b_token: self.token_label(rows, b),
            cosine: c.cosine,
            l2: c.l2,
            delta: c.delta,
        })
    }
}
