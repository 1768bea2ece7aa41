//! The demo vocabulary and its `tokenizer.json` (a word-level tokenizer with SentencePiece-
//! style `▁` word starts), with groups of related words whose embedding rows are planted close
//! together.

use super::VOCAB;
use serde_json::json;

/// The word-start marker of the vocabulary.
pub const SPACE: char = '▁';
/// The first row of the planted groups.
pub const GROUP_START: u64 = 1000;
/// Groups of related words (each becomes `▁word`), planted close together in the embedding.
pub const GROUPS: [(&str, &[&str]); 7] = [
    (
        "capitals",
        &[
            "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Warsaw",
            "Athens", "Dublin", "Oslo",
        ],
    ),
    (
        "countries",
        &[
            "France", "England", "Germany", "Spain", "Italy", "Austria", "Portugal", "Poland",
            "Greece", "Ireland", "Norway", "Sweden",
        ],
    ),
    (
        "numbers",
        &[
            "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve",
        ],
    ),
    (
        "colours",
        &[
            "red", "green", "blue", "yellow", "purple", "orange", "black", "white", "brown",
            "pink", "grey", "violet",
        ],
    ),
    (
        "animals",
        &[
            "cat", "dog", "horse", "cow", "sheep", "goat", "lion", "tiger", "bear", "wolf", "fox",
            "mouse",
        ],
    ),
    (
        "days",
        &[
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ],
    ),
    (
        "months",
        &[
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
    ),
];

/// Every token, by id: specials, filler syllables, and the planted groups from
/// [`GROUP_START`].
pub fn tokens() -> Vec<String> {
    let mut out: Vec<String> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let consonants = "bcdfghklmnprstvz".chars();
    let syllables: Vec<String> = consonants
        .flat_map(|c| "aeiou".chars().map(move |v| format!("{c}{v}")))
        .collect();
    let mut filler = syllables
        .iter()
        .map(|s| format!("{SPACE}{s}"))
        .chain(syllables.iter().cloned())
        .chain(syllables.iter().flat_map(|a| {
            syllables
                .iter()
                .flat_map(move |b| [format!("{SPACE}{a}{b}"), format!("{a}{b}")])
        }));
    let planted: Vec<String> = GROUPS
        .iter()
        .flat_map(|(_, words)| words.iter().map(|w| format!("{SPACE}{w}")))
        .collect();
    while (out.len() as u64) < VOCAB {
        let id = out.len() as u64;
        let k = id.wrapping_sub(GROUP_START) as usize;
        if id >= GROUP_START && k < planted.len() {
            out.push(planted[k].clone());
        } else if let Some(f) = filler.next() {
            out.push(f);
        } else {
            out.push(format!("<extra_{id}>"));
        }
    }
    out
}

/// The planted rows: `(group index, row)`.
pub fn group_rows() -> Vec<(usize, u64)> {
    let mut row = GROUP_START;
    let mut out = Vec::new();
    for (g, (_, words)) in GROUPS.iter().enumerate() {
        for _ in words.iter() {
            out.push((g, row));
            row += 1;
        }
    }
    out
}

/// The demo `tokenizer.json`.
pub fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = tokens()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let metaspace = json!({
        "type": "Metaspace",
        "replacement": SPACE.to_string(),
        "prepend_scheme": "always",
        "split": true
    });
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": metaspace,
        "post_processor": null,
        "decoder": metaspace,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_full_unique_and_holds_the_groups() {
        let t = tokens();
        assert_eq!(t.len() as u64, VOCAB);
        let unique: std::collections::BTreeSet<&String> = t.iter().collect();
        assert_eq!(unique.len(), t.len());
        assert_eq!(t[GROUP_START as usize], "▁Paris");
        let (g, row) = *group_rows().last().unwrap();
        assert_eq!(
            (GROUPS[g].0, t[row as usize].as_str()),
            ("months", "▁December")
        );
        for r in super::super::OUTLIER_ROWS {
            assert!(group_rows().iter().all(|&(_, gr)| gr != r));
        }
    }
}
