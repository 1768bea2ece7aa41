//! Adapters beside a base model. An adapter (a PEFT folder or a llama.cpp GGUF adapter) is
//! read as a patch of low-rank entries, one per module, named as the model names its tensors
//! (through the one description of its architecture: Hugging Face's and llama.cpp's names,
//! and the query/key rows llama.cpp's converter interleaves). A float tensor's module is a
//! low-rank entry; a quantized tensor's is applied as its blocks quantized again, its factors
//! kept beside them. The reverse: any set of low-rank entries leaves as either format, and
//! any difference (two models, a model and a patch) becomes one by truncated SVD.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{low_rank, LowRankEntry, Origin, Patch, PatchEntry};
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_infer::naming::{Naming, Rows, Scheme};
use tensor_surgeon_store::adapter::{self, Adapter, AdapterFormat, BaseNote, ModuleOut};
use tensor_surgeon_store::{patch_files, Model};
use tensor_surgeon_wire::{
    AdapterModuleRow, ExportReport, ExportedModule, ExtractReport, ExtractedModule, SkippedTensor,
};

/// How an adapter and a model do not fit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterFit {
    #[error("{module}: the model has no such tensor (an adapter for another base model?)")]
    NoTensor { module: String },
    #[error(
        "{module}: the adapter changes a {rows} x {cols} matrix but the model's {tensor} is \
         {want_rows} x {want_cols} (an adapter for another base model?)"
    )]
    Shape {
        module: String,
        tensor: String,
        rows: u64,
        cols: u64,
        want_rows: u64,
        want_cols: u64,
    },
    #[error("{tensor}: this model's description gives it no {scheme} name, so it cannot be written in that format")]
    NoName {
        tensor: String,
        scheme: &'static str,
    },
    #[error("{tensor} has shape {shape:?}: an adapter module changes a matrix")]
    NotAMatrix { tensor: String, shape: Vec<u64> },
    #[error("{tensor}: the adapter replaces it with {have} values but the model stores {want}")]
    Replaced {
        tensor: String,
        have: String,
        want: String,
    },
    #[error(
        "nothing to export: the patch has no low-rank entries{}",
        if *byte_tensors > 0 { format!(" (it changes {byte_tensors} tensor(s) byte by byte: `adapter extract` turns a difference into factors)") } else { String::new() }
    )]
    Empty { byte_tensors: usize },
    #[error("give --rank (at least 1) or --tolerance (between 0 and 1)")]
    Rule,
    /// A control vector where a patch was expected.
    #[error(
        "{} is a control vector: it is added to layer outputs as the model runs (--control-vector \
         on run, probe and trace). It would bake into the weights exactly only where a layer's \
         last matrix has a bias and no norm follows it, which none of the families this build runs \
         has (Llama, Mistral, Qwen2/3 and Phi-3 have no o_proj or down_proj bias; Gemma 3 \
         normalises the MLP's output), so it is kept as what it is",
        path.display()
    )]
    ControlVector { path: PathBuf },
}

/// The two names of a model's tensors, from its description (a model without one has only
/// its own).
pub fn naming(model: &Model) -> Naming {
    match model.gguf() {
        Some(h) => Naming::of_gguf(h).unwrap_or_default(),
        None => Naming::of_folder(&model.path),
    }
}

/// The scheme of the model's own names.
fn own_scheme(model: &Model) -> Scheme {
    match model.gguf() {
        Some(_) => Scheme::Gguf,
        None => Scheme::HuggingFace,
    }
}

/// The model's tensor an adapter's module changes, and how the module's rows map onto it.
fn own_tensor(model: &Model, naming: &Naming, name: &str) -> Result<(String, Rows)> {
    if let Some((own, rows)) = naming.to_own(name) {
        if model.get(&own).is_ok() {
            return Ok((own, rows));
        }
    }
    if model.get(name).is_ok() {
        return Ok((name.to_string(), Rows::Same));
    }
    Err(AdapterFit::NoTensor {
        module: name.to_string(),
    }
    .into())
}

/// The control-vector file of vectors read on `model` (its architecture as the hint).
pub fn control_vector_file(
    model: &Model,
    vectors: &[tensor_surgeon_infer::steering::LayerVector],
) -> tensor_surgeon_store::control_vector::ControlVector {
    tensor_surgeon_store::control_vector::ControlVector {
        model_hint: naming(model).gguf_architecture().map(str::to_string),
        layers: vectors
            .iter()
            .map(|v| (v.layer, v.vector.clone()))
            .collect(),
    }
}

/// Whether `path` is an adapter (not a patch file).
pub fn is_adapter(path: &Path) -> bool {
    adapter::detect(path).is_some()
}

/// The patch an adapter makes of `model`: a low-rank entry per module of a float tensor; the
/// blocks of a quantized one (with its factors); byte entries for whole tensors it replaces.
pub fn to_patch(model: &Model, a: &Adapter) -> Result<Patch> {
    let naming = naming(model);
    let label = a.path.file_name().map_or_else(
        || a.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let origin = Origin::new(&format!("adapter {label}"));
    let mut patch = patch_files::new_for(model, &format!("adapter {label}"));
    let (mut entries, mut blocks) = (Vec::new(), Vec::new());
    for m in &a.modules {
        let (own, rows) = own_tensor(model, &naming, &m.tensor)?;
        let (_, stored) = model.get(&own)?;
        let (want_rows, want_cols) = low_rank::matrix_shape(&stored.shape);
        if (want_rows, want_cols) != (m.rows as u64, m.cols as u64) || stored.shape.len() != 2 {
            return Err(AdapterFit::Shape {
                module: m.tensor.clone(),
                tensor: own,
                rows: m.rows as u64,
                cols: m.cols as u64,
                want_rows,
                want_cols,
            }
            .into());
        }
        let u = rows.apply(&m.u, m.rows);
        let update = crate::blocks::low_rank_update(
            model,
            &Overlay::default(),
            &own,
            (m.rank as u32, &u, &m.v),
            Some(origin.clone()),
        )?;
        entries.push(update.entry);
        blocks.extend(update.blocks);
    }
    crate::blocks::keep(model, &mut patch, entries, &blocks, &origin)?;
    for r in &a.replaced {
        let (own, _) = own_tensor(model, &naming, &r.tensor)?;
        let (_, stored) = model.get(&own)?;
        let bytes = replaced_bytes(r, stored).ok_or_else(|| AdapterFit::Replaced {
            tensor: own.clone(),
            have: format!(
                "{:?} {}",
                r.shape,
                tensor_surgeon_core::dtype::name(r.dtype)
            ),
            want: match stored.blocks {
                Some(ty) => format!("{:?} {ty} blocks", stored.shape),
                None => format!(
                    "{:?} {}",
                    stored.shape,
                    tensor_surgeon_core::dtype::name(stored.dtype)
                ),
            },
        })?;
        let base = model.tensor_bytes(&own)?;
        patch.entries.push(PatchEntry {
            tensor: own,
            offset: 0,
            original: base.to_vec(),
            patched: bytes,
            origin: Some(origin.clone()),
        });
    }
    patch.entries = tensor_surgeon_core::patch::normalize(std::mem::take(&mut patch.entries))
        .map_err(|source| Error::Patch {
            path: a.path.clone(),
            source,
        })?;
    Ok(patch)
}

/// A whole tensor an adapter replaces, in the model's dtype: as given when the dtypes agree,
/// else each value rounded to nearest into the model's float dtype; `None` when it cannot be
/// (another element count, a quantized or integer tensor, a value out of range).
fn replaced_bytes(
    r: &tensor_surgeon_store::adapter::Replaced,
    stored: &tensor_surgeon_core::header::TensorInfo,
) -> Option<Vec<u8>> {
    use tensor_surgeon_core::dtype::{self, EncodeOptions, Kind, Number};
    if stored.blocks.is_some() || stored.elements() != r.shape.iter().product::<u64>() {
        return None;
    }
    if stored.dtype == r.dtype {
        return Some(r.bytes.clone());
    }
    if dtype::kind(stored.dtype) != Kind::Float || dtype::kind(r.dtype) != Kind::Float {
        return None;
    }
    let width = dtype::element_bytes(r.dtype);
    let mut out = Vec::with_capacity(stored.byte_len() as usize);
    for el in r.bytes.chunks_exact(width) {
        let v = dtype::decode_f64(r.dtype, el);
        out.extend(dtype::encode(stored.dtype, Number::Float(v), EncodeOptions::EXACT).ok()?);
    }
    Some(out)
}

/// Reads a patch file, or an adapter as the patch it makes of `model` (an adapter needs
/// its base), before either is checked against the model.
pub fn load_within(path: &Path, model: Option<&Model>) -> Result<patch_files::Loaded> {
    if tensor_surgeon_store::control_vector::is_control_vector(path) {
        return Err(AdapterFit::ControlVector {
            path: path.to_path_buf(),
        }
        .into());
    }
    if !is_adapter(path) {
        return Ok(patch_files::load_within(path, model)?);
    }
    let Some(model) = model else {
        return Err(Error::Usage(format!(
            "{} is an adapter: it is read against its base model, so give the model",
            path.display()
        )));
    };
    let a = adapter::read(path).map_err(tensor_surgeon_store::StoreError::from)?;
    Ok(patch_files::Loaded::Json(to_patch(model, &a)?))
}

/// Reads a patch file or an adapter meant for `model` and checks it against the model.
pub fn load_for(path: &Path, model: &Model) -> Result<Patch> {
    let loaded = load_within(path, Some(model))?;
    Ok(patch_files::resolve(path, loaded, model, None)?
        .map_err(|conflicts| tensor_surgeon_store::StoreError::Conflicts { conflicts })?)
}

/// The edits of patch files and adapters, in order, as one overlay.
pub fn overlay_of(model: &Model, paths: &[PathBuf]) -> Result<Overlay> {
    let mut overlay = Overlay::default();
    for path in paths {
        for e in &load_for(path, model)?.entries {
            overlay.write(&e.tensor, e.offset, &e.patched);
        }
    }
    Ok(overlay)
}

/// An adapter's modules against `model`: rank, scale and how much each changes its tensor.
pub fn modules(model: &Model, a: &Adapter) -> Result<Vec<AdapterModuleRow>> {
    let naming = naming(model);
    let mut rows = Vec::new();
    for m in &a.modules {
        let (own, _) = own_tensor(model, &naming, &m.tensor)?;
        let norm = product_norm(&m.u, &m.v, m.rank);
        let w = values(model, &Overlay::default(), &own)?;
        let w_norm = w.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        rows.push(AdapterModuleRow {
            layer: tensor_surgeon_infer::arch::Architecture::layer_of(&own).map(|l| l as u32),
            tensor: own,
            named: m.tensor.clone(),
            rank: m.rank as u32,
            scale: m.scale,
            norm,
            relative_norm: if w_norm > 0.0 { norm / w_norm } else { 0.0 },
        });
    }
    Ok(rows)
}

/// `‖U Vᵀ‖_F` from the `rank x rank` Gram matrices: `trace((UᵀU)(VᵀV))`.
fn product_norm(u: &[f32], v: &[f32], rank: usize) -> f64 {
    let gram = |m: &[f32]| {
        let mut g = vec![0f64; rank * rank];
        for row in m.chunks_exact(rank) {
            for a in 0..rank {
                for b in 0..rank {
                    g[a * rank + b] += f64::from(row[a]) * f64::from(row[b]);
                }
            }
        }
        g
    };
    let (gu, gv) = (gram(u), gram(v));
    let mut t = 0.0;
    for a in 0..rank {
        for b in 0..rank {
            t += gu[a * rank + b] * gv[b * rank + a];
        }
    }
    t.max(0.0).sqrt()
}

/// A tensor's values as f32, through `over` (a quantized tensor's decoded from its blocks).
fn values(model: &Model, over: &Overlay, name: &str) -> Result<Vec<f32>> {
    let (_, stored) = model.get(name)?;
    let info = crate::blocks::values_info(stored);
    let bytes = model.tensor_bytes(name)?;
    let mut buf = vec![0u8; info.byte_len() as usize];
    over.view(stored, &*bytes).read(0, &mut buf);
    let width = tensor_surgeon_core::dtype::element_bytes(info.dtype);
    Ok(buf
        .chunks_exact(width)
        .map(|c| tensor_surgeon_core::dtype::decode_f64(info.dtype, c) as f32)
        .collect())
}

mod export;
mod extract;
pub use export::{export, format_for};
pub use extract::{extract, Other, RankRule};
