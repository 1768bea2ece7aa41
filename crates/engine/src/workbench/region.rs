//! Region operations in the web session: copy, swap, noise, blend, per-row/column scale.

use super::{lock, Result, Session, Workbench};
use crate::error::Error;
use tensor_surgeon_core::dtype::EncodeOptions;
use tensor_surgeon_core::edit::EditStep;
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_core::region::{self, Operand};
use tensor_surgeon_wire::{RegionRequest, SessionView};

impl Workbench {
    /// Applies a region operation as one step.
    pub fn region_edit(&self, req: &RegionRequest, origin: &Origin) -> Result<SessionView> {
        self.writable()?;
        let mut session = lock(&self.session);
        if let Some(step) = self.plan_region(&session, req, origin)? {
            session.apply(step)?;
        }
        drop(session);
        Ok(self.session_view())
    }

    /// The step a region request makes against the current edits (`None`: nothing changes).
    fn plan_region(
        &self,
        session: &Session,
        req: &RegionRequest,
        origin: &Origin,
    ) -> Result<Option<EditStep>> {
        let changes = plan_region_on(&self.model, session.history.overlay(), req)?;
        if changes.is_empty() {
            return Ok(None);
        }
        let bytes = changes.iter().map(|c| c.after.len() as u64).sum();
        let what = format!("this {} of {}", req.region.name(), req.tensor);
        super::check_step_size(bytes, self.config.max_step_bytes, &what)?;
        Ok(Some(EditStep {
            label: format!(
                "{} {}[{}] ({})",
                req.region.name(),
                req.tensor,
                req.spec,
                origin.label()
            ),
            changes,
            origin: origin.clone(),
            layer: None,
        }))
    }
}

/// The changes of a region request on `model` seen through `overlay` (shared with the CLI).
pub fn plan_region_on(
    model: &crate::store::Model,
    overlay: &tensor_surgeon_core::overlay::Overlay,
    req: &RegionRequest,
) -> Result<Vec<tensor_surgeon_core::edit::Change>> {
    let (shard, info) = model.get(&req.tensor)?;
    let select = crate::store::select;
    let sel = select(&req.tensor, &req.spec, &info.shape)?;
    let options = EncodeOptions {
        saturate: req.saturate,
        round: req.round,
    };
    let source = overlay.view(&info.name, shard.data(info));
    let other = match req.region.operand() {
        None => None,
        Some((name, spec)) => {
            let (oshard, oinfo) = model.get(name)?;
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
            Some((
                oinfo,
                selection,
                overlay.view(&oinfo.name, oshard.data(oinfo)),
            ))
        }
    };
    let operand = other.as_ref().map(|(info, selection, source)| Operand {
        info,
        selection: selection.clone(),
        source,
    });
    region::plan(info, &sel, &source, operand, &req.region, options)
        .map_err(Error::region(&req.tensor))
}
