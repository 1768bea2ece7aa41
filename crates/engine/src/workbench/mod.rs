//! The web session over one model: the edit history (journaled), views with the overlay
//! applied, patch save/load and bakes. Server functions are thin calls into this.

mod adapters;
mod analysis;
mod combine;
mod journal_paths;
mod layers;
mod layout;
mod proposals;
pub mod region;
mod run;
pub use proposals::agent_origin;
pub use run::PROBES_SUFFIX;
mod session;
mod session_view;
use journal_paths::{journal_path, remote_base_changed};
use session::Session;
mod structure;

use super::error::{Error, Result};
use crate::services::{lock, Analysis, Layouts, Runs, Snapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tensor_surgeon_core::dtype::{self};
use tensor_surgeon_store::journal::Journal;
use tensor_surgeon_store::Model;

use tensor_surgeon_core::slice::{self, SliceSpec};
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_core::view;
use tensor_surgeon_wire::{BakeStatus, CellData, ModelSummary, TensorRow, ViewData, ViewRequest};

/// Largest grid side a view request may ask for.
const MAX_GRID: u64 = 2048;
/// Changed elements listed in a session view.
const ENTRY_LIMIT: usize = 500;

/// How a session works: what it may do and where it writes. Each host builds one, once.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub read_only: bool,
    /// Saved patches and the journal go here.
    pub patches_dir: PathBuf,
    /// Bakes go here.
    pub out_dir: PathBuf,
    /// Agent edits apply at once instead of waiting for a person.
    pub agent_auto_apply: bool,
    /// Most bytes one edit or region step may change (each step keeps the original and the
    /// new bytes, and journals their compact delta: about 5x this in memory while it is
    /// written).
    pub max_step_bytes: u64,
    /// Folders whose models "compare with" may read, besides the model's own folder and the
    /// patches folder.
    pub allow_dirs: Vec<PathBuf>,
}

/// The default of [`SessionConfig::max_step_bytes`]: 256 MiB.
pub const DEFAULT_MAX_STEP_BYTES: u64 = 256 << 20;

/// Editable, patches in `./patches`, bakes in `./baked`, agent edits waiting for a person, the
/// default step cap, no folders beyond the model's own.
impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            read_only: false,
            patches_dir: PathBuf::from("patches"),
            out_dir: PathBuf::from("baked"),
            agent_auto_apply: false,
            max_step_bytes: DEFAULT_MAX_STEP_BYTES,
            allow_dirs: Vec::new(),
        }
    }
}

/// Refuses a step that would change more than `cap` bytes.
fn check_step_size(bytes: u64, cap: u64, what: &str) -> Result<()> {
    if bytes > cap {
        return Err(Error::TooLarge {
            what: what.to_string(),
            bytes,
            cap,
        });
    }
    Ok(())
}

/// One model and its editing session: the session itself (the history, its journal, layers
/// and proposals) under one lock, and the services that work on [`Snapshot`]s of it.
pub struct Workbench {
    model: Arc<Model>,
    config: SessionConfig,
    session: Mutex<Session>,
    bake: Arc<Mutex<BakeStatus>>,
    vocab: Option<Arc<tensor_surgeon_infer::tokens::Vocab>>,
    projecting: structure::ProjectProgress,
    runs: Runs,
    analysis: Analysis,
    layouts: Layouts,
    /// What the user must know about how the session opened (a journal set aside...).
    startup_warnings: Vec<String>,
}

impl Workbench {
    /// Opens the session, replaying the model's journal from a previous run.
    pub fn open(model: Model, config: SessionConfig) -> Result<(Workbench, Vec<String>)> {
        let journal_path = journal_path(&config.patches_dir, &model);
        let base = model.based_lazily();
        let (journal, history, pending, mut warnings) = Journal::open(&journal_path, &base)?;
        base.failure()?;
        drop(base);
        warnings.extend(remote_base_changed(&config.patches_dir, &model));
        let version = history.applied().len() as u64;
        // Edits of these are refused with the model's own words (Session::apply).
        let frozen = model
            .read_only_tensors()
            .into_iter()
            .filter_map(|name| {
                let why = model.refuse_derived(&name).err()?;
                Some((name, why.to_string()))
            })
            .collect();
        let block_bytes = model
            .tensors()
            .filter_map(|(_, info)| Some((info.name.clone(), info.blocks?.block_bytes() as u64)))
            .collect();
        // The replayed edits are new to every cache: each tensor they leave changed is at the
        // opening version (runs read the edited tensors from this map).
        let changed_at = history
            .overlay()
            .tensors()
            .map(|(name, _)| (name.to_string(), version))
            .collect();
        let session = Mutex::new(Session {
            frozen,
            block_bytes,
            history,
            journal,
            version,
            changed_at,
            last_proposal: pending.iter().map(|p| p.id).max().unwrap_or(0),
            pending,
        });
        let model = Arc::new(model);
        Ok((
            Workbench {
                runs: Runs::new(Arc::clone(&model), None),
                analysis: Analysis::new(Arc::clone(&model)),
                layouts: Layouts::new(Arc::clone(&model), None),
                model,
                config,
                session,
                bake: Arc::default(),
                vocab: None,
                projecting: Default::default(),
                startup_warnings: warnings.clone(),
            },
            warnings,
        ))
    }

    /// The model the session edits.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How the session was opened.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Labels rows of vocabulary-sized matrices with this tokenizer's tokens.
    pub fn set_vocab(&mut self, vocab: Option<tensor_surgeon_infer::tokens::Vocab>) {
        self.vocab = vocab.map(Arc::new);
        self.runs = Runs::new(Arc::clone(&self.model), self.vocab.clone());
        self.layouts = Layouts::new(Arc::clone(&self.model), self.vocab.clone());
    }

    /// The session's edits as they are now, for the services: a cheap copy (the overlay's
    /// runs are shared until either side writes them) taken under the lock in a moment.
    pub fn snapshot(&self) -> Snapshot {
        let s = lock(&self.session);
        Snapshot::new(s.history.overlay().clone(), s.version, s.changed_at.clone())
    }

    /// Where the journal of this model lives.
    pub fn journal_path(&self) -> PathBuf {
        lock(&self.session).journal.path().to_path_buf()
    }

    fn writable(&self) -> Result<()> {
        if self.config.read_only {
            return Err(Error::ReadOnly);
        }
        // A remote base that changed on its server takes no more edits.
        Ok(self.model.check_unchanged()?)
    }

    /// Reads what an edit of `tensor` (`spec` of it; all of it when `None`) will read from a
    /// remote model into the cache, before the session is locked: the edit then plans from
    /// the disk, and other requests do not wait on the network. Nothing to do for a local
    /// model; a bad name or spec is left for the edit to report.
    fn warm(&self, tensor: &str, spec: Option<&str>) -> Result<()> {
        Ok(self.model.prefetch(tensor, spec)?)
    }

    /// Long reads from a remote model under way (URL, bytes read, bytes to read): what a view
    /// that waits is waiting for.
    pub fn remote_reads(&self) -> Vec<tensor_surgeon_wire::RemoteRead> {
        tensor_surgeon_store::remote::reads_under_way()
            .into_iter()
            .map(|(url, done, total)| tensor_surgeon_wire::RemoteRead { url, done, total })
            .collect()
    }

    /// Model summary and tensor list.
    pub fn summary(&self) -> ModelSummary {
        let mut params: BTreeMap<String, u64> = BTreeMap::new();
        let tensors = self
            .model
            .tensors()
            .map(|(shard, t)| {
                let type_name = self.model.type_name(shard, t);
                // A blocks view is made from its tensor: no parameters of its own.
                if shard.scales_of(t).is_none() {
                    *params.entry(type_name.to_string()).or_default() += t.elements();
                }
                TensorRow {
                    name: t.name.clone(),
                    dtype: type_name.into(),
                    shape: t.shape.clone(),
                    bytes: t.byte_len(),
                    file: shard.file_name.clone(),
                }
            })
            .collect();
        ModelSummary {
            path: self.model.location.clone(),
            files: self
                .model
                .shards
                .iter()
                .map(|s| (s.file_name.clone(), s.size))
                .collect(),
            params: params.into_iter().collect(),
            metadata: self
                .model
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            tensors,
            warnings: self
                .model
                .warnings
                .iter()
                .chain(&self.startup_warnings)
                .cloned()
                .collect(),
            read_only: self.config.read_only,
            vocab_size: self.vocab.as_ref().map(|v| v.size()),
            tokenizer: self.vocab.as_ref().map(|v| v.path.display().to_string()),
            vocab_tensor: self.vocab_tensor(),
            architecture: match self.model.gguf() {
                Some(h) => tensor_surgeon_infer::gguf::describe(h),
                None => tensor_surgeon_infer::config::describe(&self.model.path),
            },
        }
    }

    /// Heatmap data of a view, overlay applied.
    pub fn view(&self, req: &ViewRequest) -> Result<ViewData> {
        let (shard, info) = self.model.get(&req.tensor)?;
        let spec = req.spec.clone().make_valid(&info.shape);
        // A snapshot of this tensor's edits: the (possibly long) read runs without the lock.
        let (overlay, version, proposal) = {
            let s = lock(&self.session);
            let proposal = match req.proposal {
                None => None,
                Some(id) => Some(match s.pending.iter().find(|p| p.id == id) {
                    Some(p) => p.request.clone(),
                    None => {
                        return Err(Error::NotFound(format!(
                            "proposal {id} is not pending (accepted, rejected or never made)"
                        )))
                    }
                }),
            };
            (s.history.overlay().only(&info.name), s.version, proposal)
        };
        // A preview: the session with the proposal planned on it (a proposal of another
        // tensor changes nothing here).
        let proposed = match &proposal {
            Some(p) if p.tensor == info.name => {
                let sel = tensor_surgeon_store::model::select(&p.tensor, &p.spec, &info.shape)?;
                let options = dtype::EncodeOptions {
                    saturate: p.saturate,
                    round: p.round,
                };
                let (changes, _) =
                    crate::blocks::plan(&self.model, &overlay, info, &sel, &p.op, options)?;
                let mut with = overlay.clone();
                for c in &changes {
                    with.write(&c.tensor, c.offset, &c.after);
                }
                Some(with)
            }
            Some(_) => Some(overlay.clone()),
            None => None,
        };
        let (rows, cols) = spec.cells();
        // Exact cells read their rows; a pooled view reads the span it covers.
        let exact =
            rows <= req.max_rows.clamp(1, MAX_GRID) && cols <= req.max_cols.clamp(1, MAX_GRID);
        let stored = shard.view_region(info, &spec.selection(&info.shape), exact)?;
        // Before and after: the base and the session, or the session and the proposal on it.
        let session = overlay.view(info, &stored);
        let preview = proposed.as_ref().map(|o| o.view(info, &stored));
        let (base, source): (&(dyn ByteSource + Sync), &(dyn ByteSource + Sync)) = match &preview {
            Some(p) => (&session, p),
            None => (&stored, &session),
        };
        let mut data = ViewData {
            tensor: info.name.clone(),
            dtype: dtype::name(info.dtype).into(),
            shape: info.shape.clone(),
            spec: spec.clone(),
            rows,
            cols,
            block: (1, 1),
            stat: req.stat,
            bytes: Vec::new(),
            pooled: Vec::new(),
            version,
            y_labels: Vec::new(),
            x_labels: Vec::new(),
            mode: req.mode,
            base_bytes: Vec::new(),
        };
        match req.mode {
            view::ViewMode::After => self.fill(&mut data, info, source, req),
            view::ViewMode::Before => self.fill(&mut data, info, base, req),
            view::ViewMode::Delta => {
                // Pooled deltas are block means: the mean of the change is the change of
                // the means, so one pass over each side is exact.
                let req = ViewRequest {
                    stat: view::PoolStat::Mean,
                    ..req.clone()
                };
                let mut before = data.clone();
                self.fill(&mut before, info, base, &req);
                self.fill(&mut data, info, source, &req);
                if data.block == (1, 1) {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    dtype::decode_f64_into(info.dtype, &data.bytes, &mut a);
                    dtype::decode_f64_into(info.dtype, &before.bytes, &mut b);
                    data.pooled = a.iter().zip(&b).map(|(x, y)| delta(*x, *y)).collect();
                    data.base_bytes = before.bytes;
                } else {
                    data.stat = view::PoolStat::Mean;
                    data.pooled = data
                        .pooled
                        .iter()
                        .zip(&before.pooled)
                        .map(|(x, y)| delta(f64::from(*x), f64::from(*y)))
                        .collect();
                }
            }
        }
        Ok(data)
    }

    /// Fills `data` (sized for the view) from `source`: exact bytes with token labels when the
    /// view fits the grid, pooled blocks computed in row bands on every core otherwise.
    fn fill(
        &self,
        data: &mut ViewData,
        info: &tensor_surgeon_core::header::TensorInfo,
        source: &(impl ByteSource + Sync + ?Sized),
        req: &ViewRequest,
    ) {
        let spec = &data.spec;
        let (rows, cols) = (data.rows, data.cols);
        let (max_rows, max_cols) = (
            req.max_rows.clamp(1, MAX_GRID),
            req.max_cols.clamp(1, MAX_GRID),
        );
        if rows <= max_rows && cols <= max_cols {
            data.bytes = tensor_surgeon_core::source::extract(
                info.dtype,
                &info.shape,
                &spec.selection(&info.shape),
                source,
            );
            let labels = |dim: Option<u32>, span: view::Span| -> Vec<String> {
                let Some(size) = dim.map(|d| info.shape[d as usize]) else {
                    return Vec::new();
                };
                if self.token_label(size, 0).is_none() {
                    return Vec::new();
                }
                (0..span.count())
                    .map(|k| self.token_label(size, span.index(k)).unwrap_or_default())
                    .collect()
            };
            data.y_labels = labels(spec.y_dim, spec.y);
            data.x_labels = labels(spec.x_dim, spec.x);
        } else {
            // Bands of grid rows on every core.
            use rayon::prelude::*;
            let grid = view::PoolGrid::fit(spec, max_rows, max_cols);
            let band = grid
                .rows
                .div_ceil(rayon::current_num_threads() as u64 * 2)
                .max(1);
            let bands: Vec<u64> = (0..grid.rows.div_ceil(band)).collect();
            let parts: Vec<Vec<f32>> = bands
                .par_iter()
                .map(|&b| {
                    let rows = b * band..((b + 1) * band).min(grid.rows);
                    view::pool_band(info.dtype, &info.shape, spec, source, grid, req.stat, rows)
                })
                .collect();
            (data.rows, data.cols, data.block) = (grid.rows, grid.cols, grid.block);
            data.pooled = parts.concat();
        }
    }

    /// The bytes of a selection (C order, `element_bytes` each), overlay applied.
    pub fn read(&self, tensor: &str, sel: &slice::Selection) -> Result<Vec<u8>> {
        let (shard, info) = self.model.get(tensor)?;
        let s = lock(&self.session);
        let base = shard.selection_region(info, sel)?;
        let source = s.history.overlay().view(info, &base);
        Ok(tensor_surgeon_core::source::extract(
            info.dtype,
            &info.shape,
            sel,
            &source,
        ))
    }

    /// One element, exactly, overlay applied.
    pub fn cell(&self, tensor: &str, index: &[u64]) -> Result<CellData> {
        let (shard, info) = self.model.get(tensor)?;
        let spec = SliceSpec(
            index
                .iter()
                .map(|&i| slice::DimSpec::Index(i as i64))
                .collect(),
        );
        if index.len() != info.shape.len() {
            return Err(Error::Usage(format!(
                "{tensor} has {} dims; got an index of {}",
                info.shape.len(),
                index.len()
            )));
        }
        let sel = spec.resolve(&info.shape).map_err(|source| Error::Slice {
            tensor: tensor.into(),
            source,
        })?;
        let base = shard.selection_region(info, &sel)?;
        let flat = index
            .iter()
            .zip(slice::strides(&info.shape))
            .map(|(i, s)| i * s)
            .sum();
        let session = lock(&self.session);
        let runs = session.history.overlay().tensor(&info.name);
        let block = shard.block_of(info, flat, runs)?.map(|b| {
            let code = tensor_surgeon_core::gguf::quant::element_code(b.ty, &b.bytes, b.element);
            tensor_surgeon_wire::BlockCell {
                ggml_type: b.ty.name().into(),
                index: b.index,
                offset: b.offset,
                hex: hex::encode(&b.bytes),
                element: b.element as u32,
                quant: code.map(|c| c.quant),
                scale: code.map(|c| c.scale),
                min: code.map(|c| c.min),
                sub_block: code.map(|c| c.sub_block as u32),
            }
        });
        let source = session.history.overlay().view(info, &base);
        let bytes = tensor_surgeon_core::source::extract(info.dtype, &info.shape, &sel, &source);
        Ok(CellData {
            block,
            tensor: tensor.into(),
            index: index.to_vec(),
            dtype: dtype::name(info.dtype).into(),
            value: dtype::format_element(info.dtype, &bytes),
            hex: hex::encode(&bytes),
            token: index
                .iter()
                .zip(&info.shape)
                .find_map(|(&i, &size)| self.token_label(size, i)),
        })
    }
}

/// `after - before` for display: equal values (NaN included) are no change.
fn delta(after: f64, before: f64) -> f32 {
    if after.to_bits() == before.to_bits() || after == before {
        0.0
    } else {
        (after - before) as f32
    }
}

/// A user-given file name: plain (no folders), with `suffix` added when missing.
fn plain_file_name(name: &str, suffix: &str) -> Result<String> {
    let name = name.trim();
    let ok = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
    if !ok {
        return Err(Error::Usage(format!("{name:?} is not a plain file name")));
    }
    Ok(if name.ends_with(suffix) {
        name.to_string()
    } else {
        format!("{name}{suffix}")
    })
}

/// A session on the demo model in a temporary folder (and the model's path), for the tests of
/// every part.
#[cfg(test)]
pub(crate) fn demo_bench() -> (tempfile::TempDir, Workbench, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = tensor_surgeon_store::demo::write_demo(dir.path()).unwrap();
    let config = SessionConfig {
        read_only: false,
        patches_dir: dir.path().join("patches"),
        out_dir: dir.path().join("out"),
        agent_auto_apply: false,
        max_step_bytes: DEFAULT_MAX_STEP_BYTES,
        allow_dirs: Vec::new(),
    };
    let (wb, _) = Workbench::open(Model::open(&model).unwrap(), config).unwrap();
    (dir, wb, model)
}
