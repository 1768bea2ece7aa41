//! The session journal: every edit, undo and redo appended as one line and fsynced before the
//! server answers, so a killed server comes back with the same history.
//!
//! A line is `CHECKSUM JSON`: the first 8 hex digits of the BLAKE3 hash of the JSON, a
//! space, the record. A line that is torn (a crash mid-write) or damaged fails its checksum
//! and is skipped and reported; the records after it still count. Lines of journals written
//! before checksums (bare JSON) are read as they are.
//!
//! A step that changes more than [`COMPACT_STEP_BYTES`] is stored in the compact patch form
//! (XOR delta, zstd, BLAKE3 digests of both sides; base64 in the line) instead of hex of both
//! sides: replay expands it against the model as the history has left it, which also checks
//! its original bytes. When most records no longer count (undone-and-replaced steps, undo and
//! redo churn, resolved proposals), the journal is rewritten as the live history alone:
//! written beside, fsynced, then renamed over the old one.

use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use tensor_surgeon_core::edit::{EditStep, History};
use tensor_surgeon_core::patch::BaseModel;
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_wire::Proposal;

/// One journal line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Apply(EditStep),
    Undo,
    Redo,
    /// An agent proposal, pending until resolved.
    Propose(Proposal),
    /// A proposal accepted or rejected; an accepted one carries its edit, so accepting is
    /// one record (journals written before this carry the edit as the next `Apply`).
    Resolve {
        id: u64,
        accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<EditStep>,
        /// The accepted edit in compact form (written instead of `step` for a big one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compact: Option<Box<CompactStep>>,
    },
    /// A big step in compact form (written instead of `Apply`).
    ApplyCompact(CompactStep),
}

/// Steps changing more bytes than this are journaled in compact form.
pub const COMPACT_STEP_BYTES: usize = 4096;

/// A journal is rewritten as its live history once it is bigger than this and most of its
/// records no longer count.
const COMPACT_JOURNAL_BYTES: u64 = 1 << 20;

/// An open journal file.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    /// Records in the file, and its length (what decides a rewrite).
    records: usize,
    bytes: u64,
}

impl Journal {
    /// Replays the journal at `path` (if any) into a fresh history and the pending proposals.
    /// A torn (a crash mid-write) or damaged line is skipped, the warnings say which; the
    /// file itself is never cut.
    /// Every step's original bytes are checked against `base` as the replay reaches it: a
    /// journal written against other weights (a retrained checkpoint with the same header)
    /// replays nothing and is kept aside under a name that says so.
    pub fn open(
        path: &Path,
        base: &impl BaseModel,
    ) -> Result<(Journal, History, Vec<Proposal>, Vec<String>)> {
        let mut history = History::default();
        let mut pending: Vec<Proposal> = Vec::new();
        let mut warnings = Vec::new();
        let mut records = 0;
        if path.exists() {
            let file = File::open(path).map_err(StoreError::io(path))?;
            for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
                let line = line.map_err(StoreError::io(path))?;
                let record = match decode(&line) {
                    Ok(Some(record)) => record,
                    Ok(None) => continue,
                    Err(why) => {
                        warnings.push(format!(
                            "{}: line {} skipped ({why}); the other records were replayed",
                            path.display(),
                            n + 1
                        ));
                        continue;
                    }
                };
                records += 1;
                let (step, compact) = match record {
                    Record::Apply(step) => (Some(step), None),
                    Record::ApplyCompact(c) => (None, Some(c)),
                    Record::Resolve {
                        id, step, compact, ..
                    } => {
                        pending.retain(|p| p.id != id);
                        (step, compact.map(|c| *c))
                    }
                    Record::Undo => {
                        history.undo();
                        (None, None)
                    }
                    Record::Redo => {
                        history.redo();
                        (None, None)
                    }
                    Record::Propose(p) => {
                        pending.push(p);
                        (None, None)
                    }
                };
                let step = match (step, compact) {
                    (Some(step), _) => match misfit(&step, &history, base) {
                        Some(why) => return set_aside(path, n + 1, &step.label, &why, warnings),
                        None => step,
                    },
                    (None, Some(c)) => {
                        let label = c.label.clone();
                        match c.expand(&history, base) {
                            Ok(step) => step,
                            Err(why) => return set_aside(path, n + 1, &label, &why, warnings),
                        }
                    }
                    (None, None) => continue,
                };
                history.apply(step);
            }
        }
        let mut journal = Journal::empty(path);
        journal.records = records;
        journal.bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // Damaged lines are evidence: a journal with any is left as it is.
        if warnings.is_empty() {
            journal.compact_if_stale(&history, &pending)?;
        }
        Ok((journal, history, pending, warnings))
    }

    /// A journal with no history, to be written at `path` (the old one is gone or set aside).
    fn empty(path: &Path) -> Journal {
        Journal {
            path: path.to_path_buf(),
            file: None,
            records: 0,
            bytes: 0,
        }
    }

    /// Appends a record and makes it durable. A write that fails is rolled back, so the
    /// next record does not join a broken line.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let line = encode(record)?;
        let path = self.path.clone();
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_for_append(&path)?),
        };
        let len = f.metadata().map_err(StoreError::io(&path))?.len();
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Best effort: if even the rollback fails, the checksum still marks the line.
            let _ = f.set_len(len);
            return Err(StoreError::io(&path)(e));
        }
        self.records += 1;
        self.bytes = len + line.len() as u64;
        Ok(())
    }

    /// Rewrites the journal as `history` and `pending` alone when it has grown past
    /// [`COMPACT_JOURNAL_BYTES`] and fewer than half its records still count. Returns whether
    /// it did. The new file is complete and durable before it replaces the old one.
    pub fn compact_if_stale(&mut self, history: &History, pending: &[Proposal]) -> Result<bool> {
        let steps = history.applied().len() + history.undone().len();
        let live = steps + history.undone().len() + pending.len();
        if self.bytes <= COMPACT_JOURNAL_BYTES || self.records <= 2 * live {
            return Ok(false);
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".compacting");
        let tmp = PathBuf::from(tmp);
        let mut lines = Vec::new();
        for step in history.applied().iter().chain(history.undone()) {
            lines.push(Record::Apply(step.clone()));
        }
        lines.extend(history.undone().iter().map(|_| Record::Undo));
        lines.extend(pending.iter().cloned().map(Record::Propose));
        let mut bytes = 0u64;
        {
            let mut out =
                std::io::BufWriter::new(File::create(&tmp).map_err(StoreError::io(&tmp))?);
            for record in &lines {
                let line = encode(record)?;
                bytes += line.len() as u64;
                out.write_all(&line).map_err(StoreError::io(&tmp))?;
            }
            let f = out
                .into_inner()
                .map_err(|e| StoreError::io(&tmp)(e.into_error()))?;
            f.sync_all().map_err(StoreError::io(&tmp))?;
        }
        self.file = None;
        std::fs::rename(&tmp, &self.path).map_err(StoreError::io(&self.path))?;
        sync_dir(&self.path)?;
        self.records = lines.len();
        self.bytes = bytes;
        Ok(true)
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One record as its journal line: checksum, space, JSON, newline. A big step is written in
/// compact form.
fn encode(record: &Record) -> Result<Vec<u8>> {
    let compacted = match record {
        Record::Apply(step) => CompactStep::of(step).map(Record::ApplyCompact),
        Record::Resolve {
            id,
            accepted,
            step: Some(step),
            ..
        } => CompactStep::of(step).map(|c| Record::Resolve {
            id: *id,
            accepted: *accepted,
            step: None,
            compact: Some(Box::new(c)),
        }),
        _ => None,
    };
    let record = compacted.as_ref().unwrap_or(record);
    let json = serde_json::to_vec(record).map_err(StoreError::Record)?;
    let mut line = hex::encode(&blake3::hash(&json).as_bytes()[..4]).into_bytes();
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// The record of one line (`None`: a blank line), or why it cannot be read.
fn decode(line: &[u8]) -> std::result::Result<Option<Record>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Journals written before checksums hold bare JSON: an object, or a string (`"undo"`).
    let json = if matches!(line.first(), Some(b'{' | b'"')) {
        line
    } else {
        let (sum, json) = match line.iter().position(|&b| b == b' ') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => return Err("no checksum".into()),
        };
        if sum != hex::encode(&blake3::hash(json).as_bytes()[..4]).as_bytes() {
            return Err("checksum mismatch: torn or damaged".into());
        }
        json
    };
    serde_json::from_slice(json)
        .map(Some)
        .map_err(|e| format!("not a record: {e}"))
}

/// Opens the journal for appending: creates it (and its folder, made durable: a new file's
/// name lives in the folder), and starts a new line if a torn record ends the file.
fn open_for_append(path: &Path) -> Result<File> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    }
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io(path))?;
    if !existed {
        sync_dir(path)?;
    }
    let len = f.metadata().map_err(StoreError::io(path))?.len();
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(StoreError::io(path))?;
        if last[0] != b'\n' {
            f.write_all(b"\n").map_err(StoreError::io(path))?;
        }
    }
    Ok(f)
}

/// Makes the folder holding `path` durable (a new or renamed file's name lives there).
fn sync_dir(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(dir)),
        None => Ok(()),
    }
}

/// Why `step` does not fit the model as `history` has left it: the first change whose
/// original bytes are not the bytes there (`None`: it fits).
fn misfit(step: &EditStep, history: &History, base: &impl BaseModel) -> Option<String> {
    for c in &step.changes {
        let Some((info, bytes)) = base.tensor(&c.tensor) else {
            return Some(format!("the model has no tensor {:?}", c.tensor));
        };
        let end = c.offset.checked_add(c.before.len() as u64);
        if end.is_none_or(|end| end > info.byte_len()) {
            return Some(format!(
                "{}+{} is past the end of the tensor ({} bytes)",
                c.tensor,
                c.offset,
                info.byte_len()
            ));
        }
        let mut now = vec![0u8; c.before.len()];
        history
            .overlay()
            .view_stored(&c.tensor, &*bytes)
            .read(c.offset, &mut now);
        if now != c.before {
            return Some(format!(
                "{}+{}: the journal expects {} but the model holds {}",
                c.tensor,
                c.offset,
                hex::encode(&c.before),
                hex::encode(&now)
            ));
        }
    }
    None
}

/// Moves a journal that does not fit the model aside (nothing of it is replayed) and starts
/// an empty one; the warning names both files.
fn set_aside(
    path: &Path,
    line: usize,
    label: &str,
    why: &str,
    mut warnings: Vec<String>,
) -> Result<(Journal, History, Vec<Proposal>, Vec<String>)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".does-not-fit-model.{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(StoreError::io(path))?;
    let warning = format!(
        "the edit journal {} was written for other weights (line {line}, step {:?}: {why}); \
         nothing was replayed, the session starts empty, and the journal is kept as {}",
        path.display(),
        label,
        aside.display()
    );
    warnings.push(warning);
    Ok((
        Journal::empty(path),
        History::default(),
        Vec::new(),
        warnings,
    ))
}

mod compact_step;
#[cfg(test)]
mod tests;

pub use compact_step::CompactStep;
