//! The server never draws: effects run only in the browser.
use super::Geom;
use crate::api::ViewData;
use crate::colormap::{Colormap, Scale, ScaleMode};
use crate::view::ViewSpec;
use leptos::web_sys::HtmlCanvasElement;

pub fn cells(
    _: &HtmlCanvasElement,
    _: &ViewData,
    _: Colormap,
    _: ScaleMode,
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
