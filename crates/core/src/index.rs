//! The sharded-model index (`model.safetensors.index.json`): tensor name -> shard file.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A parsed, checked index.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardIndex {
    /// The index's own `metadata` object (often `total_size`), if any.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Tensor name -> shard file name.
    pub weight_map: BTreeMap<String, String>,
    /// Shard file names in sorted order.
    pub shards: Vec<String>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    weight_map: BTreeMap<String, String>,
}

/// What is wrong with an index file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Not JSON with a `weight_map` of strings.
    #[error("not a safetensors index: {reason}")]
    Parse { reason: String },
    /// A shard name that is not a plain file name beside the index.
    #[error("shard {file:?} of tensor {tensor:?} is not a file name beside the index")]
    BadShardName { tensor: String, file: String },
}

/// Parses an index and checks that every shard is a plain file name (an index must not reach
/// outside its folder).
pub fn parse(text: &str) -> Result<ShardIndex, IndexError> {
    let raw: RawIndex = serde_json::from_str(text).map_err(|e| IndexError::Parse {
        reason: e.to_string(),
    })?;
    for (tensor, file) in &raw.weight_map {
        let plain =
            !file.is_empty() && file != "." && file != ".." && !file.contains(['/', '\\', '\0']);
        if !plain {
            return Err(IndexError::BadShardName {
                tensor: tensor.clone(),
                file: file.clone(),
            });
        }
    }
    let mut shards: Vec<String> = raw.weight_map.values().cloned().collect();
    shards.sort();
    shards.dedup();
    Ok(ShardIndex {
        metadata: raw.metadata,
        weight_map: raw.weight_map,
        shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lists_shards() {
        let idx = parse(r#"{"metadata":{"total_size":10},"weight_map":{"b":"m-2.safetensors","a":"m-1.safetensors","c":"m-1.safetensors"}}"#).unwrap();
        assert_eq!(idx.shards, ["m-1.safetensors", "m-2.safetensors"]);
        assert_eq!(idx.weight_map["b"], "m-2.safetensors");
    }

    #[test]
    fn rejects_paths_outside_the_folder() {
        for bad in [
            "../etc/passwd",
            "/abs.safetensors",
            "sub/x.safetensors",
            "..",
        ] {
            let text = format!(r#"{{"weight_map":{{"t":"{bad}"}}}}"#);
            assert!(
                matches!(parse(&text), Err(IndexError::BadShardName { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(r#"{"metadata":{}}"#),
            Err(IndexError::Parse { .. })
        ));
    }
}
