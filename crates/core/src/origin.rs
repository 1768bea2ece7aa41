//! Provenance: who made a change (the web app, the command line, an agent with its stated
//! hypothesis, a loaded patch). Edits record it per step, patches per entry.

use serde::{Deserialize, Serialize};

/// Where a change came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// `web`, `cli`, `agent` or `patch`.
    pub source: String,
    /// What an agent said it was testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<String>,
}

impl Origin {
    pub fn new(source: &str) -> Origin {
        Origin {
            source: source.to_string(),
            hypothesis: None,
        }
    }

    pub fn agent(hypothesis: &str) -> Origin {
        Origin {
            source: "agent".into(),
            hypothesis: Some(hypothesis.to_string()),
        }
    }

    /// `web`, or `agent: the hypothesis`.
    pub fn label(&self) -> String {
        match &self.hypothesis {
            Some(h) => format!("{}: {h}", self.source),
            None => self.source.clone(),
        }
    }
}
