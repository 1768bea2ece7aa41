//! Metadata entries (a GGUF's header key-value pairs): `{"kind": "metadata", "key",
//! "original", "patched"}`, each value `{"type": "string", "value": ...}` or `null` for a key
//! that is absent (added, or removed). They apply at bake, which writes the header again
//! ([`crate::gguf::write::rewrite`]); the tensors' bytes are untouched.

use super::{BaseModel, Conflict, ConflictKind, Origin};
use crate::gguf::write::{value_from_json, MetadataError};
use crate::gguf::Value;
use serde::{Deserialize, Serialize};

/// The `kind` of a metadata entry.
pub const KIND: &str = "metadata";

/// A typed metadata value as a patch writes it: gguf-py's type name and a JSON value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaValue {
    #[serde(rename = "type")]
    pub ty: String,
    pub value: serde_json::Value,
}

impl MetaValue {
    /// A single value or string (arrays are not edited: `None`).
    pub fn of(v: &Value) -> Option<MetaValue> {
        if matches!(v, Value::Array(..)) {
            return None;
        }
        Some(MetaValue {
            ty: v.value_type().name().into(),
            value: v.to_json(0),
        })
    }

    /// The value it stands for, checked against its type.
    pub fn to_value(&self, key: &str) -> Result<Value, MetadataError> {
        value_from_json(key, &self.ty, &self.value)
    }
}

/// One change of one metadata key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataEntry {
    /// Always [`KIND`].
    pub kind: String,
    pub key: String,
    /// The base's value (`None`: the base has no such key).
    pub original: Option<MetaValue>,
    /// The new value (`None`: the key is removed).
    pub patched: Option<MetaValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl MetadataEntry {
    /// The entry that changes `key` from `original` (the base's) to `patched`.
    pub fn new(
        key: &str,
        original: Option<&Value>,
        patched: Option<&Value>,
        origin: Option<Origin>,
    ) -> Result<MetadataEntry, MetadataError> {
        let meta = |v: Option<&Value>| match v {
            None => Ok(None),
            Some(v) => MetaValue::of(v)
                .map(Some)
                .ok_or_else(|| MetadataError::Array { key: key.into() }),
        };
        if key == "general.alignment" {
            return Err(MetadataError::Alignment);
        }
        Ok(MetadataEntry {
            kind: KIND.into(),
            key: key.into(),
            original: meta(original)?,
            patched: meta(patched)?,
            origin,
        })
    }

    /// The new value, read (`None`: the key is removed).
    pub fn new_value(&self) -> Result<Option<Value>, MetadataError> {
        self.patched
            .as_ref()
            .map(|m| m.to_value(&self.key))
            .transpose()
    }

    /// The entry's side as text, for messages.
    fn show(v: &Option<MetaValue>) -> String {
        match v {
            None => "no such key".into(),
            Some(m) => match m.to_value("") {
                Ok(v) => format!("{} {v}", m.ty),
                Err(_) => format!("{} {}", m.ty, m.value),
            },
        }
    }

    /// Where the entry does not fit `base`: not a GGUF, or the key's value is not the
    /// entry's original.
    pub fn verify(&self, base: &impl BaseModel) -> Option<Conflict> {
        let conflict = |kind| Some(Conflict::whole(&self.key, 0, kind));
        let Some(header) = base.gguf() else {
            return conflict(ConflictKind::NotGguf);
        };
        let found = header.get(&self.key);
        let expected = match self.original.as_ref().map(|m| m.to_value(&self.key)) {
            Some(Err(e)) => {
                return conflict(ConflictKind::MetadataDiffers {
                    expected: e.to_string(),
                    found: MetadataEntry::show(&found.and_then(MetaValue::of)),
                })
            }
            Some(Ok(v)) => Some(v),
            None => None,
        };
        if expected.as_ref() == found {
            return None;
        }
        conflict(ConflictKind::MetadataDiffers {
            expected: MetadataEntry::show(&self.original),
            found: match found {
                Some(Value::Array(item, values)) => {
                    format!("an array of {} {}", values.len(), item.name())
                }
                other => MetadataEntry::show(&other.and_then(MetaValue::of)),
            },
        })
    }
}

/// Metadata entries of two patches joined: a key in both is a sequence when the second's
/// original is the first's patched value (the later value wins), the same change when both
/// agree, else a conflict.
pub fn combine(
    first: &[MetadataEntry],
    second: &[MetadataEntry],
) -> Result<Vec<MetadataEntry>, Vec<Conflict>> {
    let mut out: Vec<MetadataEntry> = first.to_vec();
    let mut conflicts = Vec::new();
    for e in second {
        match out.iter_mut().find(|x| x.key == e.key) {
            None => out.push(e.clone()),
            Some(x) if e.original == x.patched => x.patched = e.patched.clone(),
            Some(x) if e.original == x.original && e.patched == x.patched => {}
            Some(x) => conflicts.push(Conflict::whole(
                &e.key,
                0,
                ConflictKind::MetadataDiffers {
                    expected: MetadataEntry::show(&e.original),
                    found: MetadataEntry::show(&x.patched),
                },
            )),
        }
    }
    // A key back at its base value is no change.
    out.retain(|x| x.original != x.patched);
    if conflicts.is_empty() {
        Ok(out)
    } else {
        Err(conflicts)
    }
}
