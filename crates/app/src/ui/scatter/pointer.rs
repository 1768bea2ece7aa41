//! The scatter's pointer: hover names the nearest point, click opens it, shift-drag draws a
//! lasso whose points are picked, a drag of a 3-D scatter rotates it.

use super::super::heatmap::Geom;
use leptos::prelude::*;
use tensor_surgeon_core::scatter::{self, Camera};
use tensor_surgeon_wire::Projection;

/// What the pointer handlers read and write (all `Copy` handles).
#[derive(Clone, Copy)]
pub(super) struct ScatterPointer {
    pub geom: RwSignal<Option<Geom>>,
    /// The press: (x, y, shift, the camera then).
    pub drag: RwSignal<Option<(f64, f64, bool, Camera)>>,
    /// The lasso being drawn, in canvas pixels.
    pub lasso: RwSignal<Vec<[f64; 2]>>,
    pub hover: RwSignal<Option<usize>>,
    pub camera: RwSignal<Camera>,
    pub picked: RwSignal<Vec<usize>>,
    /// The points on the canvas, as fractions of the plot.
    pub screen: Memo<Vec<[f32; 2]>>,
    pub proj: Memo<Option<(String, Projection)>>,
    pub open_point: Callback<usize>,
}

fn pos(ev: &leptos::ev::MouseEvent) -> (f64, f64) {
    (f64::from(ev.offset_x()), f64::from(ev.offset_y()))
}

impl ScatterPointer {
    /// A canvas pixel as a fraction of the plot.
    fn local(&self, x: f64, y: f64) -> Option<[f32; 2]> {
        let g = self.geom.get_untracked()?;
        Some([
            ((x - g.left) / g.width) as f32,
            ((y - g.top) / g.height) as f32,
        ])
    }

    /// How near a point the pointer must be to pick it (6 pixels).
    fn reach(&self) -> f32 {
        self.geom
            .get_untracked()
            .map_or(0.01, |g| (6.0 / g.width) as f32)
    }

    /// The point under canvas pixel (x, y).
    fn pick(&self, x: f64, y: f64) -> Option<usize> {
        let p = self.local(x, y)?;
        self.screen
            .with_untracked(|s| scatter::pick(s, p[0], p[1], self.reach()))
    }

    fn is3(&self) -> bool {
        self.proj
            .with_untracked(|p| p.as_ref().is_some_and(|(_, p)| p.dims == 3))
    }

    pub fn down(&self, ev: &leptos::ev::MouseEvent) {
        let (x, y) = pos(ev);
        self.drag
            .set(Some((x, y, ev.shift_key(), self.camera.get_untracked())));
        if ev.shift_key() {
            self.lasso.set(vec![[x, y]]);
        }
    }

    pub fn moved(&self, ev: &leptos::ev::MouseEvent) {
        let (x, y) = pos(ev);
        if let Some((x0, y0, shift, cam)) = self.drag.get_untracked() {
            if !shift && self.is3() {
                self.camera.set(Camera {
                    yaw: cam.yaw + (x - x0) * 0.01,
                    pitch: (cam.pitch + (y - y0) * 0.01).clamp(-1.5, 1.5),
                });
                return;
            }
            if shift {
                self.lasso.update(|l| {
                    if l.last()
                        .is_none_or(|p| (p[0] - x).abs() + (p[1] - y).abs() >= 2.0)
                    {
                        l.push([x, y]);
                    }
                });
                return;
            }
        }
        self.hover.set(self.pick(x, y));
    }

    pub fn up(&self, ev: &leptos::ev::MouseEvent) {
        let Some((x0, y0, shift, _)) = self.drag.get_untracked() else {
            return;
        };
        self.drag.set(None);
        let (x, y) = pos(ev);
        let path = self.lasso.get_untracked();
        self.lasso.set(Vec::new());
        // A lasso ends where it began: it moved if any point of its path is away.
        let moved = path
            .iter()
            .chain(std::iter::once(&[x, y]))
            .any(|p| (p[0] - x0).abs() + (p[1] - y0).abs() > 3.0);
        if shift && moved {
            let polygon: Vec<[f32; 2]> = path
                .iter()
                .chain(std::iter::once(&[x, y]))
                .filter_map(|p| self.local(p[0], p[1]))
                .collect();
            self.picked.set(
                self.screen
                    .with_untracked(|s| scatter::inside_polygon(s, &polygon)),
            );
        } else if !moved {
            if let Some(i) = self.pick(x, y) {
                self.open_point.run(i);
            }
        }
    }

    pub fn left(&self) {
        self.hover.set(None);
        self.drag.set(None);
        self.lasso.set(Vec::new());
    }
}
