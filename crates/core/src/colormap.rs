//! Colour scales for heatmaps: a colormap, a value range, and the colours that mark NaN and
//! ±Inf. Pure, so the client draws and the tests check the same mapping.

use serde::{Deserialize, Serialize};

/// The colormaps on offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Colormap {
    /// Blue (negative) - white (zero) - red (positive): centred at zero, for signed weights.
    #[default]
    Diverging,
    /// Sequential, perceptually uniform, low to high.
    Viridis,
}

/// How the value range of the scale is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum ScaleMode {
    /// `±max|x|` over the finite values.
    #[default]
    Symmetric,
    /// `min ..= max` of the finite values.
    MinMax,
    /// Clip to the `p`-th and `100 - p`-th percentiles.
    Percentile(f64),
}

/// Marked colours for values a scale cannot place.
pub const NAN_COLOR: [u8; 4] = [255, 0, 255, 255];
/// +Inf.
pub const POS_INF_COLOR: [u8; 4] = [0, 255, 0, 255];
/// -Inf.
pub const NEG_INF_COLOR: [u8; 4] = [0, 255, 255, 255];

impl Colormap {
    /// All colormaps, for pickers.
    pub const ALL: [Colormap; 2] = [Colormap::Diverging, Colormap::Viridis];

    /// Short name for URLs and labels.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Diverging => "diverging",
            Colormap::Viridis => "viridis",
        }
    }

    /// Parses [`Colormap::name`].
    pub fn parse(text: &str) -> Option<Colormap> {
        Colormap::ALL.into_iter().find(|c| c.name() == text)
    }

    /// The colour at `t` in `[0, 1]` (clamped).
    pub fn at(self, t: f64) -> [u8; 4] {
        let t = if t.is_nan() { 0.5 } else { t.clamp(0.0, 1.0) };
        let c = match self {
            // RdBu runs red -> blue; reversed so that positive is red.
            Colormap::Diverging => colorous::RED_BLUE.eval_continuous(1.0 - t),
            Colormap::Viridis => colorous::VIRIDIS.eval_continuous(t),
        };
        [c.r, c.g, c.b, 255]
    }
}

/// A value range and how values map into the colormap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub colormap: Colormap,
    pub lo: f64,
    pub hi: f64,
}

impl Scale {
    /// Chooses the range of `values` (finite ones only) by `mode`. A diverging map is always
    /// centred at zero, so its range is made symmetric.
    pub fn fit(colormap: Colormap, mode: ScaleMode, values: impl Iterator<Item = f64>) -> Scale {
        let mut finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        let (mut lo, mut hi) = match mode {
            ScaleMode::Percentile(p) if !finite.is_empty() => {
                let p = p.clamp(0.0, 49.0) / 100.0;
                let n = finite.len();
                let k_lo = ((n - 1) as f64 * p).round() as usize;
                let k_hi = ((n - 1) as f64 * (1.0 - p)).round() as usize;
                let lo = *finite.select_nth_unstable_by(k_lo, f64::total_cmp).1;
                let hi = *finite.select_nth_unstable_by(k_hi, f64::total_cmp).1;
                (lo, hi)
            }
            _ => finite
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                }),
        };
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 0.0);
        }
        if colormap == Colormap::Diverging || mode == ScaleMode::Symmetric {
            let m = lo.abs().max(hi.abs());
            (lo, hi) = (-m, m);
        }
        Scale { colormap, lo, hi }
    }

    /// Position of `v` in `[0, 1]` along the colormap.
    pub fn position(&self, v: f64) -> f64 {
        if self.hi <= self.lo {
            return 0.5;
        }
        (v - self.lo) / (self.hi - self.lo)
    }

    /// The colour of a value, with NaN and ±Inf in their marked colours.
    pub fn color(&self, v: f64) -> [u8; 4] {
        if v.is_nan() {
            NAN_COLOR
        } else if v == f64::INFINITY {
            POS_INF_COLOR
        } else if v == f64::NEG_INFINITY {
            NEG_INF_COLOR
        } else {
            self.colormap.at(self.position(v))
        }
    }

    /// A 256-entry lookup table over the range, for filling pixel buffers fast.
    pub fn lut(&self) -> Vec<[u8; 4]> {
        (0..256)
            .map(|i| self.colormap.at(i as f64 / 255.0))
            .collect()
    }

    /// LUT index of a finite value.
    pub fn lut_index(&self, v: f64) -> usize {
        (self.position(v).clamp(0.0, 1.0) * 255.0).round() as usize
    }

    /// Fills an RGBA buffer (4 bytes per value) through the LUT.
    pub fn paint(&self, values: impl Iterator<Item = f64>, out: &mut Vec<u8>) {
        let lut = self.lut();
        out.clear();
        for v in values {
            let c = if v.is_finite() {
                lut[self.lut_index(v)]
            } else {
                self.color(v)
            };
            out.extend_from_slice(&c);
        }
    }
}

/// How the client asks for colour scales in URLs and requests.
pub fn scale_mode_name(mode: ScaleMode) -> String {
    match mode {
        ScaleMode::Symmetric => "sym".into(),
        ScaleMode::MinMax => "minmax".into(),
        ScaleMode::Percentile(p) => format!("p{p}"),
    }
}

/// Parses [`scale_mode_name`].
pub fn parse_scale_mode(text: &str) -> Option<ScaleMode> {
    match text {
        "sym" => Some(ScaleMode::Symmetric),
        "minmax" => Some(ScaleMode::MinMax),
        t => t
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| (0.0..50.0).contains(p))
            .map(ScaleMode::Percentile),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_is_centred_and_marks_specials() {
        let s = Scale::fit(
            Colormap::Diverging,
            ScaleMode::MinMax,
            [-1.0, 0.5, f64::NAN, f64::INFINITY].into_iter(),
        );
        assert_eq!(
            (s.lo, s.hi),
            (-1.0, 1.0),
            "symmetric around zero, Inf ignored"
        );
        assert_eq!(s.position(0.0), 0.5);
        let mid = s.color(0.0);
        assert!(
            mid[0] > 230 && mid[1] > 230 && mid[2] > 230,
            "zero is near white: {mid:?}"
        );
        let pos = s.color(1.0);
        assert!(pos[0] > pos[2], "positive is red: {pos:?}");
        let neg = s.color(-1.0);
        assert!(neg[2] > neg[0], "negative is blue: {neg:?}");
        assert_eq!(s.color(f64::NAN), NAN_COLOR);
        assert_eq!(s.color(f64::NEG_INFINITY), NEG_INF_COLOR);
    }

    #[test]
    fn modes() {
        let vals: Vec<f64> = (0..=100).map(f64::from).collect();
        let s = Scale::fit(Colormap::Viridis, ScaleMode::MinMax, vals.iter().copied());
        assert_eq!((s.lo, s.hi), (0.0, 100.0));
        let p = Scale::fit(
            Colormap::Viridis,
            ScaleMode::Percentile(5.0),
            vals.iter().copied(),
        );
        assert_eq!((p.lo, p.hi), (5.0, 95.0));
        let e = Scale::fit(Colormap::Viridis, ScaleMode::MinMax, std::iter::empty());
        assert_eq!(e.position(1.0), 0.5, "empty range never divides by zero");
        let mut buf = Vec::new();
        s.paint([0.0, 100.0, f64::NAN].into_iter(), &mut buf);
        assert_eq!(&buf[8..12], &NAN_COLOR);
        assert_eq!(&buf[0..4], &Colormap::Viridis.at(0.0));
    }
}
