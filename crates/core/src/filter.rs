//! Tensor list filtering (substring or regex) and grouping by name prefix
//! (`model.layers.3.`), shared by the web list and the CLI.

/// A compiled tensor-name filter.
pub enum Filter {
    All,
    Substring(String),
    Regex(regex_lite::Regex),
}

impl Filter {
    /// A case-insensitive substring filter, or a regex; an empty pattern matches everything.
    pub fn new(pattern: &str, regex: bool) -> Result<Filter, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Ok(Filter::All);
        }
        if regex {
            regex_lite::Regex::new(pattern)
                .map(Filter::Regex)
                .map_err(|e| format!("invalid regex: {e}"))
        } else {
            Ok(Filter::Substring(pattern.to_lowercase()))
        }
    }

    /// Whether `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Substring(s) => name.to_lowercase().contains(s),
            Filter::Regex(r) => r.is_match(name),
        }
    }
}

/// The group a tensor belongs to: its name up to and including the first numbered segment
/// (`model.layers.3.`), or its first segment (`model.`) when there is none.
pub fn group_of(name: &str) -> &str {
    let mut end = 0;
    for (i, seg) in name.split('.').enumerate() {
        end += seg.len() + 1;
        if i > 0 && !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) && end <= name.len()
        {
            return &name[..end];
        }
    }
    match name.find('.') {
        Some(i) => &name[..=i],
        None => "",
    }
}

/// Groups indices of `names` by [`group_of`], groups in order of first appearance.
pub fn groups<'a>(names: impl Iterator<Item = &'a str>) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut pos = std::collections::HashMap::new();
    for (i, n) in names.enumerate() {
        let g = group_of(n).to_string();
        let at = *pos.entry(g.clone()).or_insert_with(|| {
            out.push((g, Vec::new()));
            out.len() - 1
        });
        out[at].1.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_layer() {
        let rows: &[(&str, &str)] = &[
            ("model.layers.3.mlp.up_proj.weight", "model.layers.3."),
            (
                "model.layers.12.self_attn.q_proj.weight",
                "model.layers.12.",
            ),
            ("model.embed_tokens.weight", "model."),
            ("lm_head.weight", "lm_head."),
            ("bias", ""),
            ("h.0.attn", "h.0."),
        ];
        for (name, group) in rows {
            assert_eq!(group_of(name), *group, "{name}");
        }
        let g = groups(["a.1.x", "b", "a.1.y", "a.2.x"].into_iter());
        assert_eq!(
            g,
            vec![
                ("a.1.".to_string(), vec![0, 2]),
                (String::new(), vec![1]),
                ("a.2.".to_string(), vec![3])
            ]
        );
    }

    #[test]
    fn filters() {
        assert!(Filter::new("UP_PROJ", false)
            .unwrap()
            .matches("model.layers.3.mlp.up_proj.weight"));
        let r = Filter::new(r"layers\.[0-1]\.mlp", true).unwrap();
        assert!(r.matches("model.layers.1.mlp.x") && !r.matches("model.layers.2.mlp.x"));
        assert!(Filter::new("(", true).is_err());
        assert!(Filter::new("  ", true).unwrap().matches("anything"));
    }
}
