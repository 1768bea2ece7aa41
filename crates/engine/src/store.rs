//! The model store: one `.safetensors` file or a sharded model, memory-mapped, as one logical
//! model. Opening reads headers only; tensor data is paged in by the OS on access.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::header::{self, Header, TensorInfo};
use tensor_surgeon_core::index;
use tensor_surgeon_core::patch::{self, BaseModel, Fingerprint};
use tensor_surgeon_core::slice::{Selection, SliceSpec};

/// The index file name of a sharded model.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One mapped file of a model.
pub struct Shard {
    pub path: PathBuf,
    /// The file name, as an index names it.
    pub file_name: String,
    pub header: Header,
    pub size: u64,
    map: Mmap,
}

impl Shard {
    /// Maps and parses one `.safetensors` file.
    pub fn open(path: &Path) -> Result<Shard> {
        regular_file(path)?;
        let file = File::open(path).map_err(Error::io(path))?;
        let size = file.metadata().map_err(Error::io(path))?.len();
        // SAFETY: the map is read-only and Tensor Surgeon never writes to, truncates or
        // replaces a base file (bakes go to a new file renamed into place). Another process
        // truncating the file while it is open would make reads fault; that is the documented
        // contract of opening a model.
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
        let header = header::parse(&map, size).map_err(|source| Error::Header {
            path: path.to_path_buf(),
            source,
        })?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Shard {
            path: path.to_path_buf(),
            file_name,
            header,
            size,
            map,
        })
    }

    /// The bytes of a tensor of this shard.
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.header.data_start() + info.data_offsets.0) as usize;
        let end = (self.header.data_start() + info.data_offsets.1) as usize;
        &self.map[start..end]
    }

    /// The header bytes (length prefix + JSON).
    pub fn header_bytes(&self) -> &[u8] {
        &self.map[..self.header.data_start() as usize]
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// A whole model: its shards and the name -> (shard, tensor) routing.
pub struct Model {
    /// The path the model was opened from.
    pub path: PathBuf,
    pub shards: Vec<Shard>,
    /// The index file name when sharded.
    pub index_file: Option<String>,
    /// The index's own metadata (sharded models).
    pub index_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Things worth telling the user that do not stop work.
    pub warnings: Vec<String>,
    order: Vec<(usize, usize)>,
    by_name: HashMap<String, (usize, usize)>,
}

impl Model {
    /// Opens a `.safetensors` file, an index `.json`, or a folder holding either.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(Error::io(path))?;
        if meta.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Model::open_index(&index, path);
            }
            let single = path.join("model.safetensors");
            if single.is_file() {
                return Model::open_single(&single, path);
            }
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(Error::io(path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            return match found.as_slice() {
                [one] => Model::open_single(one, path),
                [] => Err(Error::NotAModel {
                    path: path.into(),
                    reason: "no .safetensors file or index in this folder".into(),
                }),
                _ => Err(Error::NotAModel {
                    path: path.into(),
                    reason: format!(
                        "{} .safetensors files but no {INDEX_FILE}; open one file",
                        found.len()
                    ),
                }),
            };
        }
        regular_file(path)?;
        if path.extension().is_some_and(|e| e == "json") {
            return Model::open_index(path, path);
        }
        Model::open_single(path, path)
    }

    fn open_single(file: &Path, given: &Path) -> Result<Model> {
        let shard = Shard::open(file)?;
        let warnings = shard
            .header
            .warnings
            .iter()
            .map(|w| format!("{}: {w}", shard.file_name))
            .collect();
        let order: Vec<(usize, usize)> = (0..shard.header.tensors.len()).map(|i| (0, i)).collect();
        let by_name = order
            .iter()
            .map(|&(s, i)| (shard.header.tensors[i].name.clone(), (s, i)))
            .collect();
        Ok(Model {
            path: given.to_path_buf(),
            shards: vec![shard],
            index_file: None,
            index_metadata: None,
            warnings,
            order,
            by_name,
        })
    }

    fn open_index(index_path: &Path, given: &Path) -> Result<Model> {
        let text = std::fs::read_to_string(index_path).map_err(Error::io(index_path))?;
        let idx = index::parse(&text).map_err(|e| Error::Index {
            path: index_path.into(),
            reason: e.to_string(),
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let shards = idx
            .shards
            .iter()
            .map(|f| Shard::open(&dir.join(f)))
            .collect::<Result<Vec<_>>>()?;
        let shard_of: HashMap<&str, usize> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.file_name.as_str(), i))
            .collect();
        let mut warnings = Vec::new();
        let mut by_name = HashMap::new();
        let mut order = Vec::new();
        for (si, shard) in shards.iter().enumerate() {
            warnings.extend(
                shard
                    .header
                    .warnings
                    .iter()
                    .map(|w| format!("{}: {w}", shard.file_name)),
            );
            for (ti, t) in shard.header.tensors.iter().enumerate() {
                match idx.weight_map.get(&t.name) {
                    Some(f) if shard_of.get(f.as_str()) == Some(&si) => {}
                    Some(f) => {
                        return Err(Error::Index {
                            path: index_path.into(),
                            reason: format!(
                                "tensor {:?} is in {} but the index routes it to {f}",
                                t.name, shard.file_name
                            ),
                        })
                    }
                    None => warnings.push(format!(
                        "{}: tensor {:?} is not in the index; included",
                        shard.file_name, t.name
                    )),
                }
                if by_name.insert(t.name.clone(), (si, ti)).is_some() {
                    return Err(Error::Index {
                        path: index_path.into(),
                        reason: format!("tensor {:?} is in more than one shard", t.name),
                    });
                }
                order.push((si, ti));
            }
        }
        for (name, file) in &idx.weight_map {
            if !by_name.contains_key(name) {
                return Err(Error::Index {
                    path: index_path.into(),
                    reason: format!(
                        "the index routes {name:?} to {file}, which has no such tensor"
                    ),
                });
            }
        }
        let index_file = index_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        Ok(Model {
            path: given.to_path_buf(),
            shards,
            index_file,
            index_metadata: idx.metadata,
            warnings,
            order,
            by_name,
        })
    }

    /// Whether the model has an index and shards.
    pub fn is_sharded(&self) -> bool {
        self.index_file.is_some()
    }

    /// Every tensor with its shard, in file order (shard by shard, header order within).
    pub fn tensors(&self) -> impl Iterator<Item = (&Shard, &TensorInfo)> {
        self.order
            .iter()
            .map(|&(s, t)| (&self.shards[s], &self.shards[s].header.tensors[t]))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the model has no tensors.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The tensor called `name`, with its shard; a near name is suggested when there is none.
    /// Whether the model has a tensor of that name (no suggestion computed on a miss).
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<(&Shard, &TensorInfo)> {
        match self.by_name.get(name) {
            Some(&(s, t)) => Ok((&self.shards[s], &self.shards[s].header.tensors[t])),
            None => Err(Error::NoTensor {
                name: name.to_string(),
                suggestion: self.suggest(name),
            }),
        }
    }

    fn suggest(&self, name: &str) -> Option<String> {
        let lower = name.to_lowercase();
        self.tensors()
            .map(|(_, t)| &t.name)
            .find(|t| t.to_lowercase().contains(&lower) || lower.contains(&t.to_lowercase()))
            .cloned()
    }

    /// The `__metadata__` of the model (the first shard's, for sharded models).
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.shards.first().and_then(|s| s.header.metadata.as_ref())
    }

    /// One fingerprint per file.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.shards
            .iter()
            .map(|s| patch::fingerprint(&s.file_name, s.header_bytes(), s.size))
            .collect()
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.size).sum()
    }
}

/// Refuses what is not a regular file before opening it: opening a FIFO for reading waits
/// for a writer forever, and a device is no model.
fn regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(Error::NotAModel {
            path: path.into(),
            reason: "not a regular file (a FIFO, a device or a socket)".into(),
        })
    }
}

/// Parses a numpy-style selection (`3,:,10:20`) and resolves it against a tensor's `shape`;
/// the error names the tensor.
pub fn select(tensor: &str, spec: &str, shape: &[u64]) -> Result<Selection> {
    SliceSpec::parse(spec)
        .and_then(|s| s.resolve(shape))
        .map_err(|source| Error::Slice {
            tensor: tensor.to_string(),
            source,
        })
}

impl BaseModel for Model {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let (shard, info) = self.get(name).ok()?;
        Some((info, shard.data(info)))
    }
}
