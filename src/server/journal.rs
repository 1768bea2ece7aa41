//! The session journal: every edit, undo and redo appended as one JSON line and fsynced
//! before the server answers, so a killed server comes back with the same history.

use super::error::{Error, Result};
use crate::api::Proposal;
use crate::edit::{EditStep, History};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One journal line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Apply(EditStep),
    Undo,
    Redo,
    /// An agent proposal, pending until resolved.
    Propose(Proposal),
    /// A proposal accepted (its edit follows as an `Apply`) or rejected.
    Resolve {
        id: u64,
        accepted: bool,
    },
}

/// An open journal file.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
}

impl Journal {
    /// Replays the journal at `path` (if any) into a fresh history and the pending proposals.
    /// A torn last line (a crash mid-write) is dropped; the warnings say what was skipped.
    pub fn open(path: &Path) -> Result<(Journal, History, Vec<Proposal>, Vec<String>)> {
        let mut history = History::default();
        let mut pending: Vec<Proposal> = Vec::new();
        let mut warnings = Vec::new();
        if path.exists() {
            let file = File::open(path).map_err(Error::io(path))?;
            let mut good_len = 0u64;
            for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
                let line = line.map_err(Error::io(path))?;
                let text = String::from_utf8_lossy(&line);
                match serde_json::from_str::<Record>(&text) {
                    Ok(Record::Apply(step)) => history.apply(step),
                    Ok(Record::Undo) => {
                        history.undo();
                    }
                    Ok(Record::Redo) => {
                        history.redo();
                    }
                    Ok(Record::Propose(p)) => pending.push(p),
                    Ok(Record::Resolve { id, .. }) => pending.retain(|p| p.id != id),
                    Err(_) if text.trim().is_empty() => {}
                    Err(e) => {
                        warnings.push(format!("{}: line {} dropped ({e})", path.display(), n + 1));
                        break;
                    }
                }
                good_len += line.len() as u64 + 1;
            }
            // Cut a torn tail so the next record starts on a line of its own.
            let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
            if good_len < len {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(good_len))
                    .map_err(Error::io(path))?;
            }
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: None,
            },
            history,
            pending,
            warnings,
        ))
    }

    /// Appends a record and makes it durable.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(Error::io(&self.path))?;
            self.file = Some(f);
        }
        let mut line = serde_json::to_string(record).map_err(|e| Error::Usage(e.to_string()))?;
        line.push('\n');
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Usage("journal not open".into()))?;
        f.write_all(line.as_bytes())
            .map_err(Error::io(&self.path))?;
        f.sync_data().map_err(Error::io(&self.path))?;
        Ok(())
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Change;

    fn step(v: u8) -> EditStep {
        EditStep {
            label: format!("set {v}"),
            changes: vec![Change {
                tensor: "t".into(),
                offset: 0,
                before: vec![0],
                after: vec![v],
            }],
            origin: crate::patch::Origin::new("web"),
            layer: None,
        }
    }

    #[test]
    fn replays_in_order_and_drops_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j.jsonl");
        {
            let (mut j, _, _, _) = Journal::open(&path).unwrap();
            j.append(&Record::Apply(step(1))).unwrap();
            j.append(&Record::Apply(step(2))).unwrap();
            j.append(&Record::Undo).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"apply\":{\"lab")
            .unwrap();
        let (mut j, h, _, warnings) = Journal::open(&path).unwrap();
        assert_eq!(h.applied().len(), 1);
        assert_eq!(h.undone().len(), 1, "undo survives: redo is possible");
        assert_eq!(warnings.len(), 1);
        j.append(&Record::Redo).unwrap();
        let (_, h, _, warnings) = Journal::open(&path).unwrap();
        assert!(
            warnings.is_empty(),
            "the torn tail was cut before appending"
        );
        assert_eq!(h.applied().len(), 2);
        assert_eq!(h.applied()[0].origin.source, "web");
    }

    #[test]
    fn proposals_stay_pending_until_resolved() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j.jsonl");
        let proposal = |id| Proposal {
            id,
            request: crate::api::EditRequest {
                tensor: "t".into(),
                spec: "0".into(),
                op: crate::edit::Op::Zero,
                saturate: false,
                round: false,
            },
            origin: crate::patch::Origin::agent("t[0] is noise"),
            label: "zero t[0]".into(),
            bytes: 4,
        };
        {
            let (mut j, _, _, _) = Journal::open(&path).unwrap();
            j.append(&Record::Propose(proposal(1))).unwrap();
            j.append(&Record::Propose(proposal(2))).unwrap();
            j.append(&Record::Resolve {
                id: 1,
                accepted: false,
            })
            .unwrap();
        }
        let (_, h, pending, _) = Journal::open(&path).unwrap();
        assert_eq!(pending, vec![proposal(2)]);
        assert!(h.applied().is_empty());
    }
}
