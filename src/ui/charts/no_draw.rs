//! The server never draws: effects run only in the browser.
use super::Bar;
use crate::stats::Histogram;
use crate::ui::heatmap::Geom;
use leptos::web_sys::HtmlCanvasElement;

pub fn line(_: &HtmlCanvasElement, _: &[f32], _: &str, _: &str, _: Option<usize>) -> Option<Geom> {
    None
}

pub fn histogram(_: &HtmlCanvasElement, _: &Histogram, _: bool) -> Option<Geom> {
    None
}

pub fn bars(_: &HtmlCanvasElement, _: &[Bar], _: Option<f64>, _: &str) -> Option<Geom> {
    None
}
