//! The server never draws: effects run only in the browser.
use super::Bar;
use crate::ui::heatmap::Geom;
use leptos::web_sys::HtmlCanvasElement;
use tensor_surgeon_core::stats::Histogram;

pub fn line(_: &HtmlCanvasElement, _: &[f32], _: &str, _: &str, _: Option<usize>) -> Option<Geom> {
    None
}

pub fn histogram(_: &HtmlCanvasElement, _: &Histogram, _: bool) -> Option<Geom> {
    None
}

pub fn scatter(
    _: &HtmlCanvasElement,
    _: &[[f32; 2]],
    _: &[[u8; 4]],
    _: Option<usize>,
    _: Option<tensor_surgeon_core::scatter::Bounds>,
    _: &[String],
) -> Option<Geom> {
    None
}

pub fn strip(_: &HtmlCanvasElement, _: &[f64]) -> Option<Geom> {
    None
}

pub fn bars(_: &HtmlCanvasElement, _: &[Bar], _: Option<f64>, _: &str) -> Option<Geom> {
    None
}
