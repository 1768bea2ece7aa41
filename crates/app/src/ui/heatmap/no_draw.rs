//! The server never draws: effects run only in the browser.
use super::Geom;
use leptos::web_sys::HtmlCanvasElement;
use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::ViewData;

pub fn cells(
    _: &HtmlCanvasElement,
    _: &ViewData,
    _: Colormap,
    _: ScaleMode,
) -> Option<(Geom, Scale)> {
    None
}

pub fn cells_scaled(
    _: &HtmlCanvasElement,
    _: &ViewData,
    _: &dyn Fn(&[f64]) -> Scale,
) -> Option<(Geom, Scale)> {
    None
}

pub fn overlay(
    _: &HtmlCanvasElement,
    _: Geom,
    _: &ViewSpec,
    _: Option<&crate::ui::state::CellRect>,
    _: Option<(u64, u64)>,
) {
}

pub fn now() -> f64 {
    0.0
}
