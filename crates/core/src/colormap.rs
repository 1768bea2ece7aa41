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
    /// [`ScaleMode::Robust`] when a few outliers would wash the view out (`max|x|` more than
    /// [`OUTLIER_RATIO`] times the 99.9th percentile of `|x|`), else `±max|x|`.
    #[default]
    Auto,
    /// `±max|x|` over the finite values.
    Symmetric,
    /// `±` the 99.9th percentile of `|x|`: values beyond are drawn saturated.
    Robust,
    /// `±max|x|` on a symmetric-log axis: linear within `±c` (`c` the median `|x|`), then
    /// logarithmic, for heavy-tailed tensors.
    SymLog,
    /// `min ..= max` of the finite values.
    MinMax,
    /// Clip to the `p`-th and `100 - p`-th percentiles.
    Percentile(f64),
}

/// How far `max|x|` may exceed the 99.9th percentile of `|x|` before [`ScaleMode::Auto`]
/// clips: real LLM weights nearly always have a few channels far beyond the rest.
pub const OUTLIER_RATIO: f64 = 4.0;

/// The quantile of `|x|` a robust scale reaches.
pub const ROBUST_QUANTILE: f64 = 0.999;

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
    /// The mode that chose the range ([`ScaleMode::Auto`] resolved).
    pub mode: ScaleMode,
    /// The finite values' true minimum and maximum (`lo`/`hi` may clip them).
    pub data_lo: f64,
    pub data_hi: f64,
    /// Finite values beyond `lo ..= hi`, drawn saturated.
    pub clipped: usize,
    /// Symmetric-log axis: linear within `±c`.
    pub symlog: Option<f64>,
}

/// The `q` quantile of `values` (reordered), by nearest rank.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    let k = ((values.len() - 1) as f64 * q).round() as usize;
    *values.select_nth_unstable_by(k, f64::total_cmp).1
}

impl Scale {
    /// Chooses the range of `values` (finite ones only) by `mode`. A diverging map is always
    /// centred at zero, so its range is made symmetric.
    pub fn fit(colormap: Colormap, mode: ScaleMode, values: impl Iterator<Item = f64>) -> Scale {
        let mut finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        let (data_lo, data_hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let mut symlog = None;
        let mut mode = mode;
        if matches!(
            mode,
            ScaleMode::Auto | ScaleMode::Robust | ScaleMode::SymLog
        ) && !finite.is_empty()
        {
            let mut mags: Vec<f64> = finite.iter().map(|v| v.abs()).collect();
            let max = data_lo.abs().max(data_hi.abs());
            let robust = quantile(&mut mags, ROBUST_QUANTILE);
            if mode == ScaleMode::Auto {
                mode = if max > OUTLIER_RATIO * robust && robust > 0.0 {
                    ScaleMode::Robust
                } else {
                    ScaleMode::Symmetric
                };
            }
            match mode {
                ScaleMode::Robust if robust > 0.0 => {
                    return Scale::within(
                        colormap, mode, -robust, robust, data_lo, data_hi, &finite, None,
                    );
                }
                ScaleMode::SymLog => {
                    let median = quantile(&mut mags, 0.5);
                    let c = if median > 0.0 {
                        median
                    } else {
                        (max / 1e3).max(f64::MIN_POSITIVE)
                    };
                    symlog = Some(c);
                }
                _ => {}
            }
        }
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
            _ => (data_lo, data_hi),
        };
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 0.0);
        }
        if colormap == Colormap::Diverging
            || matches!(
                mode,
                ScaleMode::Symmetric | ScaleMode::SymLog | ScaleMode::Robust
            )
        {
            let m = lo.abs().max(hi.abs());
            (lo, hi) = (-m, m);
        }
        Scale::within(colormap, mode, lo, hi, data_lo, data_hi, &finite, symlog)
    }

    /// A scale over a range fixed in advance (`lo ..= hi`, say from a trace's corrupted
    /// probability to its clean one), whatever the values.
    pub fn between(colormap: Colormap, lo: f64, hi: f64, values: &[f64]) -> Scale {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (data_lo, data_hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = if lo < hi { (lo, hi) } else { (hi, lo) };
        Scale::within(
            colormap,
            ScaleMode::MinMax,
            lo,
            hi,
            data_lo,
            data_hi,
            &finite,
            None,
        )
    }

    /// A scale over `lo ..= hi`, counting the values it clips.
    #[allow(clippy::too_many_arguments)]
    fn within(
        colormap: Colormap,
        mode: ScaleMode,
        lo: f64,
        hi: f64,
        data_lo: f64,
        data_hi: f64,
        finite: &[f64],
        symlog: Option<f64>,
    ) -> Scale {
        let clipped = finite.iter().filter(|&&v| v < lo || v > hi).count();
        let (data_lo, data_hi) = if finite.is_empty() {
            (0.0, 0.0)
        } else {
            (data_lo, data_hi)
        };
        Scale {
            colormap,
            lo,
            hi,
            mode,
            data_lo,
            data_hi,
            clipped,
            symlog,
        }
    }

    /// Position of `v` in `[0, 1]` along the colormap (outside it when `v` is clipped).
    pub fn position(&self, v: f64) -> f64 {
        if self.hi <= self.lo {
            return 0.5;
        }
        match self.symlog {
            Some(c) => {
                let g = |v: f64| v.signum() * (v.abs() / c).ln_1p();
                let (a, b) = (g(self.lo), g(self.hi));
                (g(v) - a) / (b - a)
            }
            None => (v - self.lo) / (self.hi - self.lo),
        }
    }

    /// The value at position `t` (the inverse of [`Scale::position`]), for colour-bar ticks.
    pub fn value_at(&self, t: f64) -> f64 {
        match self.symlog {
            Some(c) => {
                let g = |v: f64| v.signum() * (v.abs() / c).ln_1p();
                let y = g(self.lo) + t * (g(self.hi) - g(self.lo));
                y.signum() * c * y.abs().exp_m1()
            }
            None => self.lo + t * (self.hi - self.lo),
        }
    }

    /// One line on how the scale was chosen, for the page: the range, the rule, and what it
    /// clips with the true range.
    pub fn describe(&self) -> String {
        let f = |v: f64| crate::units::tick_label(v, self.hi - self.lo);
        let range = if self.colormap == Colormap::Diverging || self.lo == -self.hi {
            format!("±{}", f(self.hi))
        } else {
            format!("{} … {}", f(self.lo), f(self.hi))
        };
        let rule = match self.mode {
            ScaleMode::Auto | ScaleMode::Symmetric => "max |x|".to_string(),
            ScaleMode::Robust => "robust: 99.9th percentile of |x|".into(),
            ScaleMode::SymLog => format!(
                "symmetric log, linear within ±{}",
                f(self.symlog.unwrap_or(0.0))
            ),
            ScaleMode::MinMax => "min–max".into(),
            ScaleMode::Percentile(p) => format!("clipped at the {p}% tails"),
        };
        let clipped = match self.clipped {
            0 => String::new(),
            n => format!(
                "; {n} value(s) beyond, drawn saturated (true range {} … {})",
                f(self.data_lo),
                f(self.data_hi)
            ),
        };
        format!("scale {range} ({rule}){clipped}")
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
        ScaleMode::Auto => "auto".into(),
        ScaleMode::Robust => "robust".into(),
        ScaleMode::SymLog => "symlog".into(),
        ScaleMode::Symmetric => "sym".into(),
        ScaleMode::MinMax => "minmax".into(),
        ScaleMode::Percentile(p) => format!("p{p}"),
    }
}

/// Parses [`scale_mode_name`].
pub fn parse_scale_mode(text: &str) -> Option<ScaleMode> {
    match text {
        "auto" => Some(ScaleMode::Auto),
        "robust" => Some(ScaleMode::Robust),
        "symlog" => Some(ScaleMode::SymLog),
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
    fn a_fixed_range_keeps_its_ends_whatever_the_values() {
        // A trace: from the corrupted p (0.01) to the clean p (0.8); a cell above clean clips.
        let s = Scale::between(Colormap::Viridis, 0.8, 0.01, &[0.01, 0.3, 0.9, f64::NAN]);
        assert_eq!((s.lo, s.hi), (0.01, 0.8), "ends in order");
        assert_eq!((s.data_lo, s.data_hi), (0.01, 0.9));
        assert_eq!(s.clipped, 1);
        assert_eq!(s.position(0.01), 0.0);
        assert_eq!(s.position(0.8), 1.0);
    }

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

    /// Weights like a real MLP matrix: small values and one outlier channel.
    fn weights_with_outliers() -> Vec<f64> {
        let mut v: Vec<f64> = (0..10_000)
            .map(|i| ((i * 7919) % 2001) as f64 / 1000.0 - 1.0)
            .map(|x| x * 0.1)
            .collect();
        for k in 0..5 {
            v[k * 97] = 4.78 * if k % 2 == 0 { 1.0 } else { -1.0 };
        }
        v
    }

    #[test]
    fn auto_clips_a_view_that_outliers_would_wash_out() {
        let v = weights_with_outliers();
        let s = Scale::fit(Colormap::Diverging, ScaleMode::Auto, v.iter().copied());
        assert_eq!(s.mode, ScaleMode::Robust);
        assert!(
            (s.hi - 0.1).abs() < 0.002 && s.lo == -s.hi,
            "±p99.9 of |x|: {}",
            s.hi
        );
        assert_eq!(s.clipped, 5);
        assert_eq!((s.data_lo, s.data_hi), (-4.78, 4.78));
        assert_eq!(s.color(4.78), s.color(s.hi), "beyond the scale: saturated");
        assert!(
            s.describe().contains("5 value(s) beyond"),
            "{}",
            s.describe()
        );
        // Most values now span the colormap instead of sitting at its pale centre.
        let far = v
            .iter()
            .filter(|&&x| (s.position(x) - 0.5).abs() > 0.25)
            .count();
        assert!(far > v.len() / 3, "{far}");
        let plain = Scale::fit(Colormap::Diverging, ScaleMode::Symmetric, v.iter().copied());
        let far = v
            .iter()
            .filter(|&&x| (plain.position(x) - 0.5).abs() > 0.25)
            .count();
        assert_eq!(
            far, 5,
            "±max|x| leaves all but the outliers near the centre"
        );
    }

    #[test]
    fn auto_keeps_max_abs_without_outliers() {
        let v: Vec<f64> = (0..1000).map(|i| (i as f64 - 500.0) / 100.0).collect();
        let s = Scale::fit(Colormap::Diverging, ScaleMode::Auto, v.iter().copied());
        assert_eq!(
            (s.mode, s.lo, s.hi, s.clipped),
            (ScaleMode::Symmetric, -5.0, 5.0, 0)
        );
    }

    #[test]
    fn symlog_is_monotonic_and_inverts() {
        let v = weights_with_outliers();
        let s = Scale::fit(Colormap::Diverging, ScaleMode::SymLog, v.iter().copied());
        assert_eq!((s.lo, s.hi, s.clipped), (-4.78, 4.78, 0));
        assert_eq!(s.position(0.0), 0.5);
        let xs = [-4.78, -1.0, -0.05, 0.0, 0.01, 0.1, 4.78];
        let ps: Vec<f64> = xs.iter().map(|&x| s.position(x)).collect();
        assert!(ps.windows(2).all(|w| w[0] < w[1]), "{ps:?}");
        for &x in &xs {
            assert!((s.value_at(s.position(x)) - x).abs() < 1e-9, "{x}");
        }
        // The bulk gets a visible share of the colormap (linear ±4.78 puts 0.1 at 0.51).
        assert!(s.position(0.1) > 0.6, "{}", s.position(0.1));
    }

    #[test]
    fn scale_names_round_trip() {
        for m in [
            ScaleMode::Auto,
            ScaleMode::Robust,
            ScaleMode::SymLog,
            ScaleMode::Symmetric,
            ScaleMode::MinMax,
            ScaleMode::Percentile(1.0),
        ] {
            assert_eq!(parse_scale_mode(&scale_mode_name(m)), Some(m));
        }
    }
}
