//! Tensor list filtering (substring or regex), fuzzy ranking for the quick switcher, and
//! grouping by name prefix (`model.layers.3.`), shared by the web list and the CLI.

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

/// The names that fuzzy-match `query` (its characters in order, e.g. `l3dn` for
/// `model.layers.3.mlp.down_proj.weight`), best first: indices into `names`, at most `limit`.
/// Scored as editors' quick-open lists are (nucleo, the matcher of the Helix editor): word
/// starts and consecutive runs score higher; ties keep the original order.
pub fn fuzzy_rank(names: &[&str], query: &str, limit: usize) -> Vec<usize> {
    use nucleo_matcher::pattern::{AtomKind, CaseMatching, Normalization, Pattern};
    use nucleo_matcher::{Config, Matcher, Utf32Str};
    let query = query.trim();
    if query.is_empty() {
        return (0..names.len().min(limit)).collect();
    }
    let mut matcher = Matcher::new(Config::DEFAULT.match_paths());
    let pattern = Pattern::new(
        query,
        CaseMatching::Ignore,
        Normalization::Smart,
        AtomKind::Fuzzy,
    );
    let mut buf = Vec::new();
    let mut scored: Vec<(u32, usize)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            pattern
                .score(Utf32Str::new(n, &mut buf), &mut matcher)
                .map(|s| (s, i))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(limit).map(|(_, i)| i).collect()
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

    #[test]
    fn fuzzy_rank_finds_a_tensor_by_scattered_letters() {
        let names = [
            "model.embed_tokens.weight",
            "model.layers.3.mlp.up_proj.weight",
            "model.layers.3.mlp.down_proj.weight",
            "model.layers.13.mlp.down_proj.weight",
            "model.norm.weight",
        ];
        let got = fuzzy_rank(&names, "l3 down", 10);
        assert_eq!(got[0], 2, "{got:?}");
        assert!(got.contains(&3), "13 also has a 3 before down: {got:?}");
        assert!(!got.contains(&1) && !got.contains(&0), "{got:?}");
        assert_eq!(
            fuzzy_rank(&names, "EMBED", 10),
            vec![0],
            "case does not matter"
        );
        assert!(fuzzy_rank(&names, "zzz", 10).is_empty());
        assert_eq!(
            fuzzy_rank(&names, "", 2),
            vec![0, 1],
            "no query: the list as it is"
        );
        assert_eq!(
            fuzzy_rank(&names, "weight", 2).len(),
            2,
            "at most the limit"
        );
    }
}
