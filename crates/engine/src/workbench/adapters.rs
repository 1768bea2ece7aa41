//! Adapters and control vectors in the session: an adapter (a path on this machine inside the
//! allowed folders, or a name in the patches folder) loads as a layer, its modules listed
//! against the model; the session's low-rank steps or a saved patch leave as an adapter; a
//! difference becomes one; control vectors are read from prompts and steer the edited side's
//! runs.

use super::{lock, plain_file_name, Workbench};
use crate::adapter::{self, Other, RankRule};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensor_surgeon_core::patch::{low_rank, LowRankEntry, Patch};
use tensor_surgeon_store::adapter::AdapterFormat;
use tensor_surgeon_store::control_vector;
use tensor_surgeon_wire::{
    AdapterLoad, ControlVectorReport, ControlVectorRequest, ControlVectorRow, ExportReport,
    ExtractReport, SteeringRequest,
};

/// `peft` or `gguf` (anything else is a usage error).
pub fn parse_format(text: &str) -> Result<AdapterFormat> {
    match text.trim().to_ascii_lowercase().as_str() {
        "peft" => Ok(AdapterFormat::Peft),
        "gguf" => Ok(AdapterFormat::Gguf),
        other => Err(Error::Usage(format!(
            "an adapter is written as peft or gguf, not {other:?}"
        ))),
    }
}

impl Workbench {
    /// A path a request names: a plain name is in the patches folder; any other path must be
    /// inside the folders this server may read.
    fn readable(&self, path: &str) -> Result<PathBuf> {
        let path = path.trim();
        if plain_file_name(path, "").is_ok() {
            let inside = self.config.patches_dir.join(path);
            if inside.exists() {
                return Ok(inside);
            }
        }
        let p = PathBuf::from(path);
        self.check_allowed(&p)?;
        Ok(p)
    }

    /// An adapter's modules against the model (nothing is loaded).
    pub fn adapter_modules(
        &self,
        path: &str,
    ) -> Result<Vec<tensor_surgeon_wire::AdapterModuleRow>> {
        let path = self.readable(path)?;
        let a = tensor_surgeon_store::adapter::read(&path)
            .map_err(tensor_surgeon_store::StoreError::from)?;
        adapter::modules(&self.model, &a)
    }

    /// Loads an adapter as a layer (its float modules as low-rank steps, a quantized tensor's
    /// as its blocks), and lists its modules against the model.
    pub fn load_adapter(&self, path: &str) -> Result<AdapterLoad> {
        self.writable()?;
        let path = self.readable(path)?;
        let a = tensor_surgeon_store::adapter::read(&path)
            .map_err(tensor_surgeon_store::StoreError::from)?;
        let modules = adapter::modules(&self.model, &a)?;
        let mut patch = adapter::to_patch(&self.model, &a)?;
        let entries = patch.entries.len() + patch.low_rank.len();
        let factored = self.factored(&mut patch)?;
        let fit = tensor_surgeon_store::patch_files::materialize(patch, &self.model, None)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let outcome = self.load_layer(fit, factored, entries, &format!("adapter {name}"))?;
        Ok(AdapterLoad { outcome, modules })
    }

    /// The session's low-rank steps (fact edits, ablations, loaded adapters' float modules),
    /// as a patch of low-rank entries.
    fn session_factors(&self) -> Patch {
        let s = lock(&self.session);
        let mut patch = tensor_surgeon_store::patch_files::new_for(&self.model, "session");
        for step in s.history.applied() {
            let Some(mark) = &step.low_rank else { continue };
            // The session wrote these factors itself.
            let decode = |t: &str| low_rank::from_base64(t).unwrap_or_default();
            patch.low_rank.push(LowRankEntry {
                tensor: mark.tensor.clone(),
                kind: low_rank::KIND.into(),
                rank: mark.rank,
                u: decode(&mark.u),
                v: decode(&mark.v),
                base_sha256: String::new(),
                patched_sha256: String::new(),
                origin: Some(step.origin.clone()),
            });
        }
        patch
    }

    /// Writes low-rank entries as an adapter named `save_as` in the patches folder: those of
    /// the saved patch `source`, or the session's low-rank steps when it is empty.
    pub fn export_adapter(
        &self,
        source: &str,
        format: &str,
        save_as: &str,
    ) -> Result<ExportReport> {
        let format = parse_format(format)?;
        let out = self.adapter_out(save_as, format)?;
        let patch = if source.trim().is_empty() {
            self.session_factors()
        } else {
            let path = self.saved_path(source)?;
            match adapter::load_within(&path, Some(&self.model))? {
                tensor_surgeon_store::patch_files::Loaded::Json(p) => p,
                tensor_surgeon_store::patch_files::Loaded::Compact(c) => Patch {
                    factors: c.factors,
                    ..Patch::new(c.base, c.created, c.note)
                },
            }
        };
        adapter::export(&self.model, &patch, format, &out)
    }

    /// An adapter of the difference between the model and `other` (a model path, or a
    /// patch or adapter; empty: the session's edits), written as `save_as` in the patches
    /// folder.
    pub fn extract_adapter(
        &self,
        other: &str,
        rule: RankRule,
        include: Option<&str>,
        format: &str,
        save_as: &str,
    ) -> Result<ExtractReport> {
        let format = parse_format(format)?;
        let out = self.adapter_out(save_as, format)?;
        let include = include
            .filter(|t| !t.trim().is_empty())
            .map(regex_lite::Regex::new)
            .transpose()
            .map_err(|e| Error::Usage(format!("include: {e}")))?;
        if other.trim().is_empty() {
            let snap = self.snapshot();
            return adapter::extract(
                &self.model,
                Other::Overlay(snap.overlay()),
                rule,
                include.as_ref(),
                format,
                &out,
            );
        }
        let path = self.readable(other)?;
        if adapter::is_adapter(&path) || !is_model(&path) {
            let overlay = adapter::overlay_of(&self.model, std::slice::from_ref(&path))?;
            return adapter::extract(
                &self.model,
                Other::Overlay(&overlay),
                rule,
                include.as_ref(),
                format,
                &out,
            );
        }
        let m = tensor_surgeon_store::Model::open(&path)?;
        adapter::extract(
            &self.model,
            Other::Model(&m),
            rule,
            include.as_ref(),
            format,
            &out,
        )
    }

    /// Where an adapter named `save_as` goes: a folder (PEFT) or a `.gguf` file in the
    /// patches folder.
    fn adapter_out(&self, save_as: &str, format: AdapterFormat) -> Result<PathBuf> {
        self.writable()?;
        let suffix = match format {
            AdapterFormat::Peft => "",
            AdapterFormat::Gguf => ".gguf",
        };
        let name = plain_file_name(save_as, suffix)?;
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        Ok(self.config.patches_dir.join(name))
    }

    /// A control vector read from paired prompts on the weights as the session has them,
    /// saved as `save_as` (GGUF) in the patches folder.
    pub fn compute_control_vector(
        &self,
        req: &ControlVectorRequest,
    ) -> Result<ControlVectorReport> {
        self.writable()?;
        let method = match req.method.trim().to_ascii_lowercase().as_str() {
            "" | "pca" => tensor_surgeon_infer::steering::Method::Pca,
            "mean" => tensor_surgeon_infer::steering::Method::Mean,
            other => {
                return Err(Error::Usage(format!(
                    "a control vector is read by pca or mean, not {other:?}"
                )))
            }
        };
        let name = plain_file_name(&req.save_as, ".gguf")?;
        let snap = self.snapshot();
        let model = &self.model;
        let (vectors, depth) = self.runs.exclusive(|runner| {
            let depth = runner.layers()?;
            let layers: Vec<usize> = match &req.layers {
                Some(l) => l.iter().map(|&l| l as usize).collect(),
                None => (1..depth).collect(),
            };
            if layers.contains(&0) {
                return Err(Error::Usage(
                    "llama.cpp's control vectors have no direction for layer 0".into(),
                ));
            }
            let cache = tensor_surgeon_infer::weights::WeightCache::default();
            let w = runner.weights_in(
                &cache,
                &**model,
                cache.edited_from_overlay(&**model, snap.overlay())?,
            );
            let v = runner.control_vector(&w, &req.positive, &req.negative, &layers, method)?;
            Ok((v, depth))
        })?;
        let cv = adapter::control_vector_file(model, &vectors);
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        control_vector::write(&self.config.patches_dir.join(&name), &cv, depth)?;
        Ok(ControlVectorReport {
            file: name,
            layers: vectors
                .iter()
                .map(|v| ControlVectorRow {
                    layer: v.layer as u32,
                    norm: v
                        .vector
                        .iter()
                        .map(|x| f64::from(*x).powi(2))
                        .sum::<f64>()
                        .sqrt(),
                    agreement: v.agreement,
                })
                .collect(),
        })
    }

    /// The control vectors the edited side runs with from now on (none: the list is empty).
    pub fn set_steering(&self, req: &SteeringRequest) -> Result<()> {
        if req.vectors.is_empty() {
            self.runs.set_steering(None);
            return Ok(());
        }
        let info = self.runs.runnable()?.info(0);
        let mut steering = tensor_surgeon_infer::steering::Steering::default();
        for v in &req.vectors {
            let path = self.readable(&v.path)?;
            let cv = control_vector::read(&path)?;
            for (&layer, values) in &cv.layers {
                if layer >= info.layers as usize || values.len() != info.hidden as usize {
                    return Err(Error::Usage(format!(
                        "{}: direction.{layer} is {} wide, for a model of {} layers of width {}: \
                         a control vector for another model?",
                        v.path,
                        values.len(),
                        info.layers,
                        info.hidden
                    )));
                }
                steering.add(layer, values, v.strength);
            }
        }
        self.runs.set_steering(Some(Arc::new(steering)));
        Ok(())
    }

    /// The control vectors the edited side runs with, as set.
    pub fn steering_layers(&self) -> Vec<u32> {
        self.runs
            .steering()
            .map(|s| s.layers().map(|l| l as u32).collect())
            .unwrap_or_default()
    }
}

/// Whether `path` opens as a model (a safetensors file, an index, a folder of one, a GGUF
/// model), not a patch.
fn is_model(path: &Path) -> bool {
    !path.extension().is_some_and(|e| e == "json" || e == "tsp")
}
