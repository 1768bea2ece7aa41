//! Region operations in the web session: copy, swap, noise, blend, per-row/column scale; and
//! the same kinds of operation on a row set (rows or columns chosen anywhere).

use super::{lock, Result, Session, Workbench};
use crate::error::Error;
use tensor_surgeon_core::dtype::EncodeOptions;
use tensor_surgeon_core::edit::{self, EditStep, Op};
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_core::region::Region;
use tensor_surgeon_core::region::{self, Operand};
use tensor_surgeon_wire::{RegionRequest, RowSetAction, RowSetRequest, SessionView};

impl Workbench {
    /// Applies a region operation as one step.
    pub fn region_edit(&self, req: &RegionRequest, origin: &Origin) -> Result<SessionView> {
        self.writable()?;
        self.warm(&req.tensor, None)?;
        if let Some((other, _)) = req.region.operand() {
            self.warm(other, None)?;
        }
        let mut session = lock(&self.session);
        if let Some(step) = self.plan_region(&session, req, origin)? {
            session.apply(step)?;
        }
        drop(session);
        self.session_view()
    }

    /// The step a region request makes against the current edits (`None`: nothing changes).
    fn plan_region(
        &self,
        session: &Session,
        req: &RegionRequest,
        origin: &Origin,
    ) -> Result<Option<EditStep>> {
        let overlay = session.history.overlay();
        let planned = plan_region_on(&self.model, overlay, req)?;
        let (changes, requantized) = crate::blocks::to_stored(&self.model, overlay, planned)?;
        if changes.is_empty() {
            return Ok(None);
        }
        let quantized = crate::blocks::label(&requantized);
        let bytes = changes.iter().map(|c| c.after.len() as u64).sum();
        let what = format!("this {} of {}", req.region.name(), req.tensor);
        super::check_step_size(bytes, self.config.max_step_bytes, &what)?;
        Ok(Some(EditStep {
            label: format!(
                "{} {}[{}]{quantized} ({})",
                req.region.name(),
                req.tensor,
                req.spec,
                origin.label()
            ),
            changes,
            origin: origin.clone(),
            layer: None,
            low_rank: None,
        }))
    }
}

impl Workbench {
    /// Applies one operation to every line of a row set, as one step.
    pub fn row_set_edit(&self, req: &RowSetRequest, origin: &Origin) -> Result<SessionView> {
        self.writable()?;
        self.warm(&req.tensor, None)?;
        let (shard, info) = self.model.get(&req.tensor)?;
        let nd = info.shape.len();
        if nd < 2 {
            return Err(Error::Usage(format!(
                "{} is {nd}-D: row sets need rows and columns",
                info.name
            )));
        }
        let what = if req.columns { "column" } else { "row" };
        let size = if req.columns {
            info.shape[nd - 1]
        } else {
            info.shape[0]
        };
        let mut lines = req.lines.clone();
        lines.sort_unstable();
        lines.dedup();
        if lines.is_empty() {
            return Err(Error::Usage(format!("the set has no {what}s")));
        }
        if let Some(bad) = lines.iter().find(|&&l| l >= size) {
            return Err(Error::Usage(format!(
                "{what} {bad} is outside {} ({size} {what}s)",
                info.name
            )));
        }
        let per_line = info.shape.iter().product::<u64>() / size;
        let bytes = per_line
            .saturating_mul(lines.len() as u64)
            .saturating_mul(tensor_surgeon_core::dtype::element_bytes(info.dtype) as u64);
        let label = format!(
            "{} {} {what}s of {} ({})",
            req.action.name(),
            lines.len(),
            info.name,
            origin.label()
        );
        super::check_step_size(bytes, self.config.max_step_bytes, &label)?;
        let spec_of = |l: u64| {
            if req.columns {
                let mut dims = vec![":".to_string(); nd - 1];
                dims.push(l.to_string());
                dims.join(",")
            } else {
                l.to_string()
            }
        };
        let options = EncodeOptions::default();
        let mut session = lock(&self.session);
        let overlay = session.history.overlay();
        let base = shard.data(info)?;
        let source = overlay.view(info, &*base);
        let mut changes = Vec::new();
        for &l in &lines {
            let spec = spec_of(l);
            let planned = match &req.action {
                RowSetAction::Zero | RowSetAction::Scale { .. } => {
                    let op = match req.action {
                        RowSetAction::Scale { factor } => Op::Scale { factor },
                        _ => Op::Zero,
                    };
                    let sel = tensor_surgeon_store::model::select(&req.tensor, &spec, &info.shape)?;
                    edit::plan(info, &sel, &source, &op, options)?
                }
                RowSetAction::Noise { std, seed } => plan_region_on(
                    &self.model,
                    overlay,
                    &RegionRequest {
                        tensor: info.name.clone(),
                        spec,
                        region: Region::Noise {
                            std: *std,
                            seed: seed.wrapping_add(l),
                        },
                        saturate: false,
                        round: false,
                    },
                )?,
                RowSetAction::Blend { with, alpha } => plan_region_on(
                    &self.model,
                    overlay,
                    &RegionRequest {
                        tensor: info.name.clone(),
                        spec,
                        region: Region::Blend {
                            with: with.clone(),
                            alpha: *alpha,
                        },
                        saturate: false,
                        round: false,
                    },
                )?,
            };
            changes.extend(planned);
        }
        // A quantized tensor's values are quantized again into its blocks.
        let (changes, _) = crate::blocks::to_stored(&self.model, overlay, changes)?;
        if !changes.is_empty() {
            session.apply(EditStep {
                label,
                changes,
                origin: origin.clone(),
                layer: None,
                low_rank: None,
            })?;
        }
        drop(session);
        self.session_view()
    }
}

/// The changes of a region request on `model` seen through `overlay` (shared with the CLI).
pub fn plan_region_on(
    model: &tensor_surgeon_store::Model,
    overlay: &tensor_surgeon_core::overlay::Overlay,
    req: &RegionRequest,
) -> Result<Vec<tensor_surgeon_core::edit::Change>> {
    let (shard, info) = model.get(&req.tensor)?;
    let select = tensor_surgeon_store::model::select;
    let sel = select(&req.tensor, &req.spec, &info.shape)?;
    let options = EncodeOptions {
        saturate: req.saturate,
        round: req.round,
    };
    let base = shard.data(info)?;
    let source = overlay.view(info, &*base);
    let operand_base = match req.region.operand() {
        Some((name, _)) => {
            let (oshard, oinfo) = model.get(name)?;
            Some(oshard.data(oinfo)?)
        }
        None => None,
    };
    let other = match (req.region.operand(), &operand_base) {
        (Some((name, spec)), Some(obase)) => {
            let (_, oinfo) = model.get(name)?;
            if spec.is_none() && oinfo.shape != info.shape {
                return Err(Error::Usage(format!(
                    "{} has shape {:?}, {} has shape {:?}: blend needs equal shapes",
                    oinfo.name, oinfo.shape, info.name, info.shape
                )));
            }
            let selection = match spec {
                Some(s) => select(name, s, &oinfo.shape)?,
                None => sel.clone(),
            };
            Some((oinfo, selection, overlay.view(oinfo, &**obase)))
        }
        _ => None,
    };
    let operand = other.as_ref().map(|(info, selection, source)| Operand {
        info,
        selection: selection.clone(),
        source,
    });
    region::plan(info, &sel, &source, operand, &req.region, options)
        .map_err(Error::region(&req.tensor))
}
