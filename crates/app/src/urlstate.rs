//! The whole view state as URL query parameters, so reload, back/forward and shared links
//! reproduce what the user saw. Parsing is forgiving: unknown or bad values fall back to
//! defaults, and the view itself is repaired against the tensor's shape later.

use tensor_surgeon_core::colormap::{Colormap, ScaleMode};
use tensor_surgeon_core::view::{PoolStat, Span, ViewSpec};

/// What the page shows.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UrlState {
    /// The open tensor.
    pub tensor: Option<String>,
    pub y_dim: Option<u32>,
    pub x_dim: Option<u32>,
    /// Fixed indices of the other dims (`i=3,0,5`; missing entries are repaired).
    pub index: Vec<u64>,
    pub y: Option<Span>,
    pub x: Option<Span>,
    pub colormap: Option<Colormap>,
    pub scale: Option<ScaleMode>,
    pub stat: Option<PoolStat>,
    /// The model scan panel is open.
    pub scan: bool,
    /// Before / after / delta (`show=`; absent: after).
    pub mode: Option<tensor_surgeon_core::view::ViewMode>,
    /// The dock's open tab (`tab=`; absent: the cell tab).
    pub tab: Option<String>,
    /// A pending proposal previewed (`proposal=`): after is the session with it.
    pub proposal: Option<u64>,
}

fn parse_span(text: &str) -> Option<Span> {
    let mut parts = text.split(':').map(|p| p.trim().parse::<u64>().ok());
    let start = parts.next()??;
    let stop = parts.next()??;
    let step = parts.next().flatten().unwrap_or(1);
    Some(Span { start, stop, step })
}

fn span_text(s: Span) -> String {
    if s.step == 1 {
        format!("{}:{}", s.start, s.stop)
    } else {
        format!("{}:{}:{}", s.start, s.stop, s.step)
    }
}

impl UrlState {
    /// Reads the state from query pairs (`t`, `y`, `x`, `i`, `ys`, `xs`, `cm`, `sc`, `pool`,
    /// `scan`, `show`, `tab`, `proposal`).
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> UrlState {
        let mut s = UrlState::default();
        for (k, v) in pairs {
            match k {
                "t" if !v.is_empty() => s.tensor = Some(v.to_string()),
                "y" => s.y_dim = v.parse().ok(),
                "x" => s.x_dim = v.parse().ok(),
                "i" => {
                    s.index = v
                        .split(',')
                        .map(|p| p.trim().parse().unwrap_or(u64::MAX))
                        .collect()
                }
                "ys" => s.y = parse_span(v),
                "xs" => s.x = parse_span(v),
                "cm" => s.colormap = Colormap::parse(v),
                "sc" => s.scale = tensor_surgeon_core::colormap::parse_scale_mode(v),
                "pool" => s.stat = PoolStat::parse(v),
                "scan" => s.scan = v == "1",
                "show" => s.mode = tensor_surgeon_core::view::ViewMode::parse(v),
                "tab" if !v.is_empty() => s.tab = Some(v.to_string()),
                "proposal" => s.proposal = v.parse().ok(),
                _ => {}
            }
        }
        s
    }

    /// The state as query pairs, in a stable order.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(t) = &self.tensor {
            out.push(("t", t.clone()));
        }
        if let Some(y) = self.y_dim {
            out.push(("y", y.to_string()));
        }
        if let Some(x) = self.x_dim {
            out.push(("x", x.to_string()));
        }
        if !self.index.is_empty() {
            out.push((
                "i",
                self.index
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        }
        if let Some(y) = self.y {
            out.push(("ys", span_text(y)));
        }
        if let Some(x) = self.x {
            out.push(("xs", span_text(x)));
        }
        if let Some(c) = self.colormap {
            out.push(("cm", c.name().to_string()));
        }
        if let Some(s) = self.scale {
            out.push(("sc", tensor_surgeon_core::colormap::scale_mode_name(s)));
        }
        if let Some(p) = self.stat {
            out.push((
                "pool",
                if p == PoolStat::MaxAbs {
                    "maxabs".into()
                } else {
                    p.name().to_string()
                },
            ));
        }
        if self.scan {
            out.push(("scan", "1".into()));
        }
        if let Some(m) = self.mode {
            out.push(("show", m.name().to_string()));
        }
        if let Some(t) = &self.tab {
            out.push(("tab", t.clone()));
        }
        if let Some(p) = self.proposal {
            out.push(("proposal", p.to_string()));
        }
        out
    }

    /// The view for a tensor of `shape`, repaired.
    pub fn view(&self, shape: &[u64]) -> ViewSpec {
        ViewSpec {
            y_dim: self.y_dim,
            x_dim: self.x_dim,
            index: self.index.clone(),
            y: self.y.unwrap_or(Span::full(u64::MAX)),
            x: self.x.unwrap_or(Span::full(u64::MAX)),
        }
        .make_valid(shape)
    }

    /// The same state showing `view` (as repaired for the tensor).
    pub fn with_view(&self, view: &ViewSpec) -> UrlState {
        UrlState {
            y_dim: view.y_dim,
            x_dim: view.x_dim,
            index: view.index.clone(),
            y: Some(view.y),
            x: Some(view.x),
            ..self.clone()
        }
    }

    /// Opening another tensor resets the view (and ends a proposal's preview).
    pub fn open(&self, tensor: &str) -> UrlState {
        UrlState {
            tensor: Some(tensor.to_string()),
            colormap: self.colormap,
            scale: self.scale,
            stat: self.stat,
            mode: self.mode,
            tab: self.tab.clone(),
            ..UrlState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = UrlState {
            tensor: Some("model.layers.0.mlp.up_proj.weight".into()),
            y_dim: Some(0),
            x_dim: Some(1),
            index: vec![0, 0],
            y: Some(Span {
                start: 2,
                stop: 10,
                step: 2,
            }),
            x: Some(Span {
                start: 0,
                stop: 128,
                step: 1,
            }),
            colormap: Some(Colormap::Viridis),
            scale: Some(ScaleMode::Percentile(1.0)),
            stat: Some(PoolStat::Mean),
            scan: true,
            mode: Some(tensor_surgeon_core::view::ViewMode::Delta),
            tab: Some("patch".into()),
            proposal: Some(7),
        };
        let pairs = s.to_pairs();
        let back = UrlState::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        assert_eq!(back, s);
    }

    #[test]
    fn bad_values_fall_back() {
        let s = UrlState::from_pairs(
            [
                ("t", "w"),
                ("y", "x"),
                ("ys", "5"),
                ("cm", "nope"),
                ("i", "1,a"),
            ]
            .into_iter(),
        );
        assert_eq!(s.tensor.as_deref(), Some("w"));
        assert_eq!((s.y_dim, s.y, s.colormap), (None, None, None));
        let v = s.view(&[4, 6, 8]);
        assert_eq!(v.index, vec![1, 3, 4], "bad index repaired to the middle");
    }
}
