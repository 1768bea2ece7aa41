//! What the heatmap says in words: the view's status line (exact or pooled, what it
//! compares, NaN and Inf cells) and the hovered cell's coordinates, value and bytes.

use super::Hover;
use leptos::prelude::*;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::view::ViewMode;
use tensor_surgeon_wire::ViewData;

/// The status line of a view.
pub(super) fn status(d: &ViewData) -> impl IntoView {
    let (rows, cols) = d.spec.cells();
    let text = if d.block == (1, 1) {
        format!("exact: {rows} x {cols} cells")
    } else {
        format!("pooled: {rows} x {cols} cells shown as {} x {} blocks of {} x {} ({}); zoom in for exact cells", d.rows, d.cols, d.block.0, d.block.1, d.stat.name())
    };
    let delta = d.mode == ViewMode::Delta;
    let text = match d.mode {
        ViewMode::After => text,
        m => {
            let changed = d.pooled.iter().filter(|v| **v != 0.0).count();
            let what = if d.block == (1, 1) { "cells" } else { "blocks" };
            let extra = if delta {
                format!(", {changed} {what} changed (mean delta per block when pooled)")
            } else {
                String::new()
            };
            format!("{}: {text}{extra}", m.name())
        }
    };
    let changed = delta.then(|| d.pooled.iter().filter(|v| **v != 0.0).count().to_string());
    let nan = if delta {
        0
    } else if d.block == (1, 1) {
        count_specials(d)
    } else {
        d.pooled.iter().filter(|v| !v.is_finite()).count()
    };
    view! { <span class="view-status" data-exact=(d.block == (1, 1)).to_string() data-changed=changed>{text}</span> {(nan > 0).then(|| view! { <span class="specials">{format!(" · {nan} NaN/Inf cells (NaN magenta, +Inf green, -Inf cyan)")}</span> })} }
}

/// The text shown for the hovered cell: full tensor coordinates, exact value and bytes (or
/// the pooled block and its statistic).
pub(super) fn describe(data: &ViewData, h: Hover) -> String {
    let spec = &data.spec;
    let idx = spec.coords(h.row, h.col);
    let Some(dt) = dtype::parse_name(&data.dtype) else {
        return String::new();
    };
    if data.block == (1, 1) {
        let w = dtype::element_bytes(dt);
        let i = (h.row * data.cols + h.col) as usize * w;
        let Some(b) = data.bytes.get(i..i + w) else {
            return String::new();
        };
        if data.mode == ViewMode::Delta {
            let before = data.base_bytes.get(i..i + w).unwrap_or_default();
            let d = data
                .pooled
                .get((h.row * data.cols + h.col) as usize)
                .copied()
                .unwrap_or(f32::NAN);
            return format!(
                "{:?}: delta = {}   (before {} -> after {})",
                idx,
                dtype::pretty_f64(f64::from(d)),
                dtype::format_element(dt, before),
                dtype::format_element(dt, b)
            );
        }
        let token = [
            data.y_labels.get(h.row as usize),
            data.x_labels.get(h.col as usize),
        ]
        .into_iter()
        .flatten()
        .map(|t| format!("   token {t:?}"))
        .collect::<String>();
        format!(
            "{:?} = {}   (0x{} {}){token}",
            idx,
            dtype::format_element(dt, b),
            hex::encode(b),
            data.dtype
        )
    } else {
        let (br, bc) = (h.row / data.block.0, h.col / data.block.1);
        let v = data
            .pooled
            .get((br * data.cols + bc) as usize)
            .copied()
            .unwrap_or(f32::NAN);
        let r0 = spec.y.index(br * data.block.0);
        let c0 = spec.x.index(bc * data.block.1);
        format!(
            "{:?}: block of {}x{} cells from [{r0}, {c0}], {}{} = {}",
            idx,
            data.block.0,
            data.block.1,
            data.stat.name(),
            if data.mode == ViewMode::Delta {
                " delta"
            } else {
                ""
            },
            dtype::pretty_f64(f64::from(v))
        )
    }
}

fn count_specials(d: &ViewData) -> usize {
    let Some(dt) = dtype::parse_name(&d.dtype) else {
        return 0;
    };
    let mut vals = Vec::new();
    dtype::decode_f64_into(dt, &d.bytes, &mut vals);
    vals.iter().filter(|v| !v.is_finite()).count()
}
