//! The model store: one `.safetensors` file or a sharded model, memory-mapped, as one logical
//! model. Opening reads headers only; tensor data is paged in by the OS on access.

mod based;
mod gguf;
mod shard;

pub use based::Based;
pub use gguf::{BlockOf, GgufPart};
pub use shard::{Bytes, Region, Shard};

use crate::error::{Result, StoreError};
use crate::remote::RemoteFile;
use shard::Backing;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::index;
use tensor_surgeon_core::patch::{self, Fingerprint};
use tensor_surgeon_core::slice::{Selection, SliceSpec};
use tensor_surgeon_core::tensors::{ReadError, TensorSource};

/// The index file name of a sharded model.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A whole model: its shards and the name -> (shard, tensor) routing.
pub struct Model {
    /// The path the model was opened from; for a remote model, the local folder that holds
    /// its side files (config, tokenizer) and its session.
    pub path: PathBuf,
    /// Where the model is, as the user named it: a path or a URL.
    pub location: String,
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
        if let Some(url) = path.to_str().filter(|p| crate::remote::is_url(p)) {
            return Model::open_remote(url);
        }
        let meta = std::fs::metadata(path).map_err(StoreError::io(path))?;
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
                .map_err(StoreError::io(path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "safetensors" || e == "gguf")
                })
                .collect();
            found.sort();
            return match found.as_slice() {
                [one] => Model::open_single(one, path),
                [] => Err(StoreError::NotAModel {
                    path: path.into(),
                    reason: "no .safetensors or .gguf file, nor an index, in this folder".into(),
                }),
                _ => Err(StoreError::NotAModel {
                    path: path.into(),
                    reason: format!(
                        "{} model files but no {INDEX_FILE}; open one file",
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
        Ok(Model::open_single_shard(Shard::open(file)?, given))
    }

    fn open_single_shard(shard: Shard, given: &Path) -> Model {
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
        Model {
            path: given.to_path_buf(),
            location: given.display().to_string(),
            shards: vec![shard],
            index_file: None,
            index_metadata: None,
            warnings,
            order,
            by_name,
        }
    }

    fn open_index(index_path: &Path, given: &Path) -> Result<Model> {
        let text = std::fs::read_to_string(index_path).map_err(StoreError::io(index_path))?;
        let idx = index::parse(&text).map_err(|source| StoreError::IndexFile {
            path: index_path.into(),
            source,
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let shards = idx
            .shards
            .iter()
            .map(|f| Shard::open(&dir.join(f)))
            .collect::<Result<Vec<_>>>()?;
        Model::assemble(idx, shards, index_path, given, given.display().to_string())
    }

    /// A sharded model from its parsed index and opened shards: routes checked both ways.
    fn assemble(
        idx: index::ShardIndex,
        shards: Vec<Shard>,
        index_path: &Path,
        given: &Path,
        location: String,
    ) -> Result<Model> {
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
                        return Err(StoreError::Index {
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
                    return Err(StoreError::Index {
                        path: index_path.into(),
                        reason: format!("tensor {:?} is in more than one shard", t.name),
                    });
                }
                order.push((si, ti));
            }
        }
        for (name, file) in &idx.weight_map {
            if !by_name.contains_key(name) {
                return Err(StoreError::Index {
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
            location,
            shards,
            index_file,
            index_metadata: idx.metadata,
            warnings,
            order,
            by_name,
        })
    }

    /// Opens a model by URL: a `.safetensors` file, an index `.json` (shards beside it, their
    /// headers read concurrently), or a folder URL holding either. Only headers are read (two
    /// range requests a file); the side files (config, tokenizer) are copied into a local
    /// folder, which becomes the model's `path`.
    fn open_remote(url: &str) -> Result<Model> {
        use crate::remote;
        let url = url.trim_end_matches('/').to_string();
        let (index_url, file_url) = if url.ends_with(".json") {
            (Some(url.clone()), None)
        } else if url.ends_with(".safetensors") || url.ends_with(".gguf") {
            (None, Some(url.clone()))
        } else {
            let index = format!("{url}/{INDEX_FILE}");
            match remote::fetch_small(&index)? {
                Some(_) => (Some(index), None),
                None => (None, Some(format!("{url}/model.safetensors"))),
            }
        };
        let anchor = index_url.clone().or(file_url.clone()).expect("one of them");
        let local = remote_folder(&anchor)?;
        let mut model = match index_url {
            Some(index_url) => {
                let text =
                    remote::fetch_small(&index_url)?.ok_or_else(|| StoreError::RemoteNotFound {
                        url: index_url.clone(),
                    })?;
                let index_path = PathBuf::from(&index_url);
                let idx = index::parse(&String::from_utf8_lossy(&text)).map_err(|source| {
                    StoreError::IndexFile {
                        path: index_path.clone(),
                        source,
                    }
                })?;
                let urls = idx
                    .shards
                    .iter()
                    .map(|f| remote::sibling(&index_url, f))
                    .collect();
                let shards = remote::open_all(urls)?
                    .into_iter()
                    .map(|(f, h)| Shard::remote(f, h))
                    .collect::<Result<Vec<_>>>()?;
                Model::assemble(idx, shards, &index_path, &local, index_url.clone())?
            }
            None => {
                let file_url = file_url.expect("one of them");
                let (file, header) = remote::open_all(vec![file_url.clone()])?
                    .pop()
                    .expect("one file asked, one opened");
                let shard = Shard::remote(file, header)?;
                let mut m = Model::open_single_shard(shard, &local);
                m.location = file_url;
                m
            }
        };
        // Side files the tools use beside the weights; absent ones are simply absent.
        let urls = SIDE_FILES
            .iter()
            .map(|name| remote::sibling(&anchor, name))
            .collect();
        for (name, got) in SIDE_FILES.iter().zip(remote::fetch_all_small(urls)?) {
            match got {
                Some(bytes) => crate::atomic::write_atomic(&local.join(name), &bytes)?,
                None => {
                    let _ = std::fs::remove_file(local.join(name));
                }
            }
        }
        model.path = local;
        Ok(model)
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

    /// Reads ahead what an edit of `spec` (numpy-style; `None`: the whole tensor) of `tensor`
    /// will read, so the edit itself waits on no network: a remote model's bytes go into the
    /// cache; a mapped model has nothing to do. A bad name or spec is left for the edit to
    /// report.
    pub fn prefetch(&self, tensor: &str, spec: Option<&str>) -> Result<()> {
        if !self.is_remote() {
            return Ok(());
        }
        let Some((shard, info)) = self.find(tensor) else {
            return Ok(());
        };
        match spec.map(|s| select(tensor, s, &info.shape)) {
            Some(Ok(sel)) => shard.selection_region(info, &sel).map(drop),
            Some(Err(_)) => Ok(()),
            None => shard.data(info).map(drop),
        }
    }

    /// Whether the model has a tensor of that name (no suggestion computed on a miss).
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The tensor called `name`, with its shard; `None` when there is none.
    pub fn find(&self, name: &str) -> Option<(&Shard, &TensorInfo)> {
        let &(s, t) = self.by_name.get(name)?;
        Some((&self.shards[s], &self.shards[s].header.tensors[t]))
    }

    /// The tensor called `name`, with its shard; a near name is suggested when there is none.
    pub fn get(&self, name: &str) -> Result<(&Shard, &TensorInfo)> {
        self.find(name).ok_or_else(|| StoreError::NoTensor {
            name: name.to_string(),
            suggestion: self.suggest(name),
        })
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
            .map(|s| Fingerprint {
                version: s.remote_file().map(|f| f.version.tag()),
                ..patch::fingerprint(&s.file_name, s.header_bytes(), s.size)
            })
            .collect()
    }

    /// Checks that no remote file of the model changed on its server since it was opened (a
    /// request per file); local files are taken as they are. Edits and bakes check first.
    pub fn check_unchanged(&self) -> Result<()> {
        let files: Vec<Arc<RemoteFile>> = self
            .shards
            .iter()
            .filter_map(|s| match &s.backing {
                Backing::Remote { file, .. } => Some(Arc::clone(file)),
                Backing::Mapped(_) => None,
            })
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        crate::remote::check_unchanged(files)
    }

    /// The GGUF header, when the model is one GGUF file.
    pub fn gguf(&self) -> Option<&tensor_surgeon_core::gguf::GgufHeader> {
        self.shards.first().and_then(Shard::gguf)
    }

    /// The block type of a quantized tensor (`None`: not quantized, or no such tensor).
    pub fn quantized(&self, name: &str) -> Option<tensor_surgeon_core::gguf::GgmlType> {
        let (shard, info) = self.find(name)?;
        shard.quantized(info)
    }

    /// The name of a tensor's stored type: ggml's (`"Q4_K"`) for a quantized tensor, else its
    /// dtype's (`"BF16"`).
    pub fn type_name(&self, shard: &Shard, info: &TensorInfo) -> &'static str {
        match shard.quantized(info) {
            Some(ty) => ty.name(),
            None => tensor_surgeon_core::dtype::name(info.dtype),
        }
    }

    /// Refuses edits of a blocks view (`NAME#scales`): it is made from the blocks, not
    /// stored.
    pub fn refuse_derived(&self, name: &str) -> Result<()> {
        let Some((shard, info)) = self.find(name) else {
            return Ok(());
        };
        match shard.scales_of(info) {
            Some((src, _)) => Err(StoreError::Derived {
                tensor: name.to_string(),
                source_tensor: src.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The tensors that are made rather than stored (the blocks views of quantized
    /// tensors): edits of them are refused.
    pub fn read_only_tensors(&self) -> Vec<String> {
        self.tensors()
            .filter(|(shard, info)| shard.scales_of(info).is_some())
            .map(|(_, info)| info.name.clone())
            .collect()
    }

    /// Whether the model is read from a server.
    pub fn is_remote(&self) -> bool {
        self.shards.iter().any(|s| s.remote_file().is_some())
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.size).sum()
    }
}

/// The files read beside a remote model's weights, when the server has them.
const SIDE_FILES: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// The local folder of a remote model (its side files, patches, session): in the cache
/// folder, named after the URL.
fn remote_folder(url: &str) -> Result<PathBuf> {
    let name: String = url
        .rsplit('/')
        .next()
        .unwrap_or("model")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(48)
        .collect();
    let id = &blake3::hash(url.as_bytes()).to_hex()[..12];
    let dir = crate::cache_root()
        .join("models")
        .join(format!("{name}-{id}"));
    std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
    Ok(dir)
}

/// Refuses what is not a regular file before opening it: opening a FIFO for reading waits
/// for a writer forever, and a device is no model.
fn regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(StoreError::io(path))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(StoreError::NotAModel {
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
        .map_err(|source| StoreError::Slice {
            tensor: tensor.to_string(),
            source,
        })
}

/// The forward pass reads a model's tensors through this, whatever holds them.
impl TensorSource for Model {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.find(name).map(|(_, info)| info)
    }

    fn resident(&self, name: &str) -> Option<&[u8]> {
        let (shard, info) = self.find(name)?;
        shard.mapped(info)
    }

    fn blocks(&self, name: &str) -> Option<&[u8]> {
        let (shard, info) = self.find(name)?;
        shard.mapped_blocks(info)
    }

    fn bytes(&self, name: &str) -> std::result::Result<Cow<'_, [u8]>, ReadError> {
        Ok(self.tensor_bytes(name)?)
    }
}

impl Model {
    /// A whole tensor's bytes: borrowed from the map, or read from the server.
    pub fn tensor_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (shard, info) = self.get(name)?;
        Ok(match shard.data(info)? {
            Bytes::Mapped(b) => Cow::Borrowed(b),
            Bytes::Fetched(b) => Cow::Owned(b),
        })
    }
}
