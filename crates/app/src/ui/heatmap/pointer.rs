//! The heatmap's pointer and keys: the hovered cell, click and shift-drag to select, drag to
//! pan, wheel to zoom, arrow keys to move the selection, Enter to start editing.

use super::{Geom, Hover};
use crate::ui::state::CellRect;
use crate::ui::Ctx;
use leptos::prelude::*;
use tensor_surgeon_core::view::{Span, ViewSpec};
use tensor_surgeon_wire::{TensorRow, ViewData};

/// A press on the cells: where, on which cell, with shift held or not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Drag {
    x: f64,
    y: f64,
    cell: Hover,
    shift: bool,
}

/// The view cell at canvas pixel (x, y), if the pixel is on the cells.
fn cell_at(g: Geom, view: &ViewSpec, x: f64, y: f64) -> Option<Hover> {
    let (rows, cols) = view.cells();
    let fx = (x - g.left) / g.width;
    let fy = (y - g.top) / g.height;
    if !(0.0..1.0).contains(&fx) || !(0.0..1.0).contains(&fy) || rows == 0 || cols == 0 {
        return None;
    }
    Some(Hover {
        row: ((fy * rows as f64) as u64).min(rows - 1),
        col: ((fx * cols as f64) as u64).min(cols - 1),
    })
}

/// Shows `view` with `f(span, axis, dim size)` applied to its y and x spans (no new history
/// entry: panning and zooming would flood it).
fn show_spans(ctx: Ctx, view: &ViewSpec, shape: &[u64], f: impl Fn(Span, char, u64) -> Span) {
    let mut v = view.clone();
    if let Some(d) = v.y_dim {
        v.y = f(v.y, 'y', shape[d as usize]);
    }
    if let Some(d) = v.x_dim {
        v.x = f(v.x, 'x', shape[d as usize]);
    }
    ctx.go(
        &ctx.url.get_untracked().with_view(&v.make_valid(shape)),
        true,
    );
}

/// What the pointer handlers read and write (all `Copy` handles).
#[derive(Clone, Copy)]
pub(super) struct Pointer {
    pub ctx: Ctx,
    pub geom: RwSignal<Option<Geom>>,
    pub hover: RwSignal<Option<Hover>>,
    pub drag: RwSignal<Option<Drag>>,
    pub data: LocalResource<Option<Result<ViewData, ServerFnError>>>,
}

fn pos(ev: &leptos::ev::MouseEvent) -> (f64, f64) {
    (f64::from(ev.offset_x()), f64::from(ev.offset_y()))
}

impl Pointer {
    /// Where the cells are, the view and the tensor: what a pointer event needs.
    fn ready(&self) -> Option<(Geom, ViewSpec, TensorRow)> {
        Some((
            self.geom.get_untracked()?,
            self.ctx.view.get_untracked()?,
            self.ctx.tensor.get_untracked()?,
        ))
    }

    /// The pooling block of the view shown (1 x 1: exact cells).
    fn block(&self) -> (u64, u64) {
        self.data
            .with_untracked(|d| {
                d.as_ref()
                    .and_then(|d| d.as_ref())
                    .and_then(|r| r.as_ref().ok())
                    .map(|d| d.block)
            })
            .unwrap_or((1, 1))
    }

    pub fn moved(&self, ev: &leptos::ev::MouseEvent) {
        let (Some(g), Some(view)) = (self.geom.get_untracked(), self.ctx.view.get_untracked())
        else {
            return;
        };
        let (x, y) = pos(ev);
        self.hover.set(cell_at(g, &view, x, y));
    }

    pub fn down(&self, ev: &leptos::ev::MouseEvent) {
        let (Some(g), Some(view)) = (self.geom.get_untracked(), self.ctx.view.get_untracked())
        else {
            return;
        };
        let (x, y) = pos(ev);
        if let Some(cell) = cell_at(g, &view, x, y) {
            self.drag.set(Some(Drag {
                x,
                y,
                cell,
                shift: ev.shift_key(),
            }));
        }
    }

    pub fn up(&self, ev: &leptos::ev::MouseEvent) {
        let Some(start) = self.drag.get_untracked() else {
            return;
        };
        self.drag.set(None);
        let Some((g, view, t)) = self.ready() else {
            return;
        };
        let (x, y) = pos(ev);
        let end = cell_at(g, &view, x, y).unwrap_or(start.cell);
        let moved = (x - start.x).abs() + (y - start.y).abs() > 3.0;
        let block = self.block();
        let (rows, cols) = view.cells();
        if !moved || start.shift {
            // Click selects the cell (or pooled block); shift-drag a rectangle.
            let (a, b) = (start.cell, end);
            let r0 = a.row.min(b.row) / block.0 * block.0;
            let c0 = a.col.min(b.col) / block.1 * block.1;
            let r1 = ((a.row.max(b.row) / block.0 + 1) * block.0).min(rows);
            let c1 = ((a.col.max(b.col) / block.1 + 1) * block.1).min(cols);
            self.ctx.selection.set(Some(CellRect {
                view: view.clone(),
                tensor: t.name.clone(),
                rows: (r0, r1),
                cols: (c0, c1),
            }));
        } else {
            // Drag pans by whole cells.
            let dr = start.cell.row as i64 - end.row as i64;
            let dc = start.cell.col as i64 - end.col as i64;
            show_spans(self.ctx, &view, &t.shape, |span, axis, size| {
                span.panned(if axis == 'y' { dr } else { dc }, size)
            });
        }
    }

    pub fn wheel(&self, ev: &leptos::ev::WheelEvent) {
        let Some((g, view, t)) = self.ready() else {
            return;
        };
        let (x, y) = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        let Some(cell) = cell_at(g, &view, x, y) else {
            return;
        };
        ev.prevent_default();
        let factor = if ev.delta_y() < 0.0 { 0.5 } else { 2.0 };
        show_spans(self.ctx, &view, &t.shape, |span, axis, size| {
            span.zoomed(if axis == 'y' { cell.row } else { cell.col }, factor, size)
        });
    }

    pub fn key(&self, ev: &leptos::ev::KeyboardEvent) {
        let ctx = self.ctx;
        let (Some(view), Some(t)) = (ctx.view.get_untracked(), ctx.tensor.get_untracked()) else {
            return;
        };
        let (rows, cols) = view.cells();
        let sel = ctx.selection.get_untracked().filter(|s| s.view == view);
        let (r, c) = sel.as_ref().map(|s| (s.rows.0, s.cols.0)).unwrap_or((0, 0));
        let (r, c) = match ev.key().as_str() {
            "ArrowUp" => (r.saturating_sub(1), c),
            "ArrowDown" => ((r + 1).min(rows.saturating_sub(1)), c),
            "ArrowLeft" => (r, c.saturating_sub(1)),
            "ArrowRight" => (r, (c + 1).min(cols.saturating_sub(1))),
            "Enter" => {
                ev.prevent_default();
                ctx.focus_edit.update(|n| *n += 1);
                return;
            }
            _ => return,
        };
        ev.prevent_default();
        ctx.selection.set(Some(CellRect {
            view,
            tensor: t.name,
            rows: (r, r + 1),
            cols: (c, c + 1),
        }));
    }
}
