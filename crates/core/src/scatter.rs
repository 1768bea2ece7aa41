//! Scatter geometry: where projected points land on screen (2-D by their bounds, 3-D rotated
//! by a camera and fitted by the cloud's radius so rotating never rescales), and picking
//! points back from the pointer.

/// A view direction for 3-D scatters (radians).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Camera {
    pub yaw: f64,
    pub pitch: f64,
}

/// Data bounds of a 2-D layout: `(x0, x1, y0, y1)`.
pub type Bounds = (f64, f64, f64, f64);

/// Padded bounds of the first two coordinates.
pub fn bounds(points: &[f32], dims: usize) -> Bounds {
    let mut b = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in points.chunks_exact(dims.max(1)) {
        let (x, y) = (f64::from(p[0]), f64::from(*p.get(1).unwrap_or(&0.0)));
        if x.is_finite() && y.is_finite() {
            b = (b.0.min(x), b.1.max(x), b.2.min(y), b.3.max(y));
        }
    }
    if b.0 > b.1 {
        return (-1.0, 1.0, -1.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| ((hi - lo) * 0.04).max(1e-12);
    let (px, py) = (pad(b.0, b.1), pad(b.2, b.3));
    (b.0 - px, b.1 + px, b.2 - py, b.3 + py)
}

/// Screen positions in `[0, 1]^2` (y downwards) of every point.
pub fn layout(points: &[f32], dims: usize, cam: Camera) -> Vec<[f32; 2]> {
    if dims < 3 {
        let (x0, x1, y0, y1) = bounds(points, dims);
        return points
            .chunks_exact(dims.max(1))
            .map(|p| {
                let y = f64::from(*p.get(1).unwrap_or(&0.0));
                [
                    ((f64::from(p[0]) - x0) / (x1 - x0)) as f32,
                    ((y1 - y) / (y1 - y0)) as f32,
                ]
            })
            .collect();
    }
    let n = points.len() / 3;
    let mut centre = [0f64; 3];
    for p in points.chunks_exact(3) {
        for (c, v) in centre.iter_mut().zip(p) {
            *c += f64::from(*v) / n.max(1) as f64;
        }
    }
    let radius = points
        .chunks_exact(3)
        .map(|p| {
            p.iter()
                .zip(&centre)
                .map(|(v, c)| (f64::from(*v) - c).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .fold(1e-12, f64::max);
    let (sy, cy) = cam.yaw.sin_cos();
    let (sp, cp) = cam.pitch.sin_cos();
    points
        .chunks_exact(3)
        .map(|p| {
            let (x, y, z) = (
                f64::from(p[0]) - centre[0],
                f64::from(p[1]) - centre[1],
                f64::from(p[2]) - centre[2],
            );
            // Yaw about the vertical axis, then pitch about the horizontal one.
            let (x, z) = (cy * x + sy * z, -sy * x + cy * z);
            let y = cp * y - sp * z;
            [
                (0.5 + 0.48 * x / radius) as f32,
                (0.5 - 0.48 * y / radius) as f32,
            ]
        })
        .collect()
}

/// The point nearest to `(x, y)` (screen units) within `reach`.
pub fn pick(screen: &[[f32; 2]], x: f32, y: f32, reach: f32) -> Option<usize> {
    screen
        .iter()
        .enumerate()
        .map(|(i, p)| (i, (p[0] - x).powi(2) + (p[1] - y).powi(2)))
        .filter(|(_, d)| *d <= reach * reach)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The points inside the rectangle spanned by two screen corners.
pub fn inside(screen: &[[f32; 2]], a: [f32; 2], b: [f32; 2]) -> Vec<usize> {
    let (x0, x1) = (a[0].min(b[0]), a[0].max(b[0]));
    let (y0, y1) = (a[1].min(b[1]), a[1].max(b[1]));
    screen
        .iter()
        .enumerate()
        .filter(|(_, p)| (x0..=x1).contains(&p[0]) && (y0..=y1).contains(&p[1]))
        .map(|(i, _)| i)
        .collect()
}

/// The points inside a closed polygon (a lasso; even-odd rule), in screen units.
pub fn inside_polygon(screen: &[[f32; 2]], polygon: &[[f32; 2]]) -> Vec<usize> {
    if polygon.len() < 3 {
        return Vec::new();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in polygon {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    let contains = |p: &[f32; 2]| {
        if p[0] < x0 || p[0] > x1 || p[1] < y0 || p[1] > y1 {
            return false;
        }
        let mut inside = false;
        let mut j = polygon.len() - 1;
        for i in 0..polygon.len() {
            let (a, b) = (polygon[i], polygon[j]);
            if (a[1] > p[1]) != (b[1] > p[1])
                && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
            {
                inside = !inside;
            }
            j = i;
        }
        inside
    };
    screen
        .iter()
        .enumerate()
        .filter(|(_, p)| contains(p))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lasso_takes_what_it_encloses() {
        // A concave "C": the notch's point is outside though inside the bounding box.
        let c = [
            [0.0, 0.0],
            [1.0, 0.0],
            [1.0, 0.3],
            [0.3, 0.3],
            [0.3, 0.7],
            [1.0, 0.7],
            [1.0, 1.0],
            [0.0, 1.0],
        ];
        let pts = [[0.1, 0.5], [0.6, 0.5], [0.5, 0.1], [0.5, 0.9], [1.5, 0.5]];
        assert_eq!(super::inside_polygon(&pts, &c), vec![0, 2, 3]);
        assert!(super::inside_polygon(&pts, &c[..2]).is_empty());
    }

    use super::*;

    #[test]
    fn two_d_fills_the_box_and_picks_back() {
        let pts = [0.0f32, 0.0, 10.0, 5.0, 5.0, 10.0];
        let s = layout(&pts, 2, Camera::default());
        assert!(s
            .iter()
            .all(|p| (0.0..=1.0).contains(&p[0]) && (0.0..=1.0).contains(&p[1])));
        assert!(s[0][1] > s[2][1], "larger y is higher on screen");
        assert_eq!(pick(&s, s[1][0] + 0.01, s[1][1], 0.05), Some(1));
        assert_eq!(pick(&s, 0.5, 0.5, 0.01), None);
        assert_eq!(inside(&s, [0.0, 0.0], [1.0, 0.4]), vec![2]);
    }

    #[test]
    fn three_d_rotation_keeps_the_cloud_on_screen_and_moves_points() {
        let pts = [
            1.0f32, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0,
        ];
        let a = layout(&pts, 3, Camera::default());
        let b = layout(
            &pts,
            3,
            Camera {
                yaw: 1.0,
                pitch: 0.3,
            },
        );
        assert_ne!(a, b);
        for p in a.iter().chain(&b) {
            assert!((0.0..=1.0).contains(&p[0]) && (0.0..=1.0).contains(&p[1]));
        }
        // A quarter turn of yaw brings +z to where +x was (a cloud centred at the origin).
        let axes = [
            1.0f32, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0,
            0.0, -1.0,
        ];
        let a = layout(&axes, 3, Camera::default());
        let q = layout(
            &axes,
            3,
            Camera {
                yaw: std::f64::consts::FRAC_PI_2,
                pitch: 0.0,
            },
        );
        assert!(
            (q[4][0] - a[0][0]).abs() < 1e-5 && (q[4][1] - a[0][1]).abs() < 1e-5,
            "{q:?} {a:?}"
        );
    }
}
