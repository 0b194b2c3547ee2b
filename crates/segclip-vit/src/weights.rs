//! Reading checkpoints and naming their tensors the SegCLIP way.
//!
//! Accepted files: safetensors, and PyTorch `.bin`/`.pth`/`.pt` zip archives holding a state dict
//! (read with candle's pickle reader; a `state_dict` or `model` entry and a DDP `module.` prefix
//! are handled). Accepted names (spec section 5):
//!
//! - official SegCLIP keys (`clip.…`, `vis_mae_decoder.…`), kept as they are;
//! - OpenAI CLIP keys (`visual.…`, `transformer.resblocks.…`), renamed as spec 5.3;
//! - Hugging Face CLIP keys (`vision_model.…`, `text_model.…`), renamed, with the separate
//!   q/k/v projections packed into `in_proj_*` and `visual_projection`/`text_projection`
//!   transposed to `x @ W` form.
//!
//! Half-precision tensors are upcast to f32. [`StateDict::check`] compares the result with the
//! keys and shapes a model expects and names every problem.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// Which naming scheme a checkpoint used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    SegClip,
    OpenAiClip,
    HfClip,
}

/// Named tensors under official SegCLIP key names, in f32.
#[derive(Debug, Clone)]
pub struct StateDict {
    pub tensors: HashMap<String, Tensor>,
    /// Where they came from (a path), for error messages.
    pub source: String,
    pub format: KeyFormat,
    /// The safetensors header's `__metadata__` strings (empty for PyTorch files), e.g.
    /// `segclip.bg_thresh` written by `segclip export`.
    pub metadata: HashMap<String, String>,
}

/// One expected tensor: key and shape.
pub type KeySpec = (String, Vec<usize>);

/// Resolve a local path or a Hugging Face hub id (`owner/repo` or `owner/repo/file`) to a file.
///
/// A path that exists always wins. A hub id is looked up in the local hub cache; with the `hub`
/// feature it is downloaded when missing. Without a file name, `model.safetensors`,
/// `pytorch_model.bin` and `segclip.bin` are tried in that order.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let parts: Vec<&str> = spec.split('/').collect();
    let looks_like_hub = parts.len() >= 2
        && !spec.starts_with('.')
        && !spec.starts_with('/')
        && parts.iter().all(|p| !p.is_empty());
    if !looks_like_hub {
        return Err(Error::WeightFile {
            path: spec.into(),
            reason: "no such file".into(),
        });
    }
    let repo = format!("{}/{}", parts[0], parts[1]);
    let files: Vec<String> = if parts.len() > 2 {
        vec![parts[2..].join("/")]
    } else {
        ["model.safetensors", "pytorch_model.bin", "segclip.bin"]
            .map(String::from)
            .to_vec()
    };
    let cache = hf_hub::Cache::from_env();
    for f in &files {
        if let Some(p) = cache.model(repo.clone()).get(f) {
            return Ok(p);
        }
    }
    download(spec, &repo, &files)
}

#[cfg(feature = "hub")]
fn download(spec: &str, repo: &str, files: &[String]) -> Result<PathBuf> {
    let api = hf_hub::api::sync::Api::new().map_err(|e| Error::Hub {
        id: spec.into(),
        reason: e.to_string(),
    })?;
    let mut last = String::new();
    for f in files {
        match api.model(repo.to_string()).get(f) {
            Ok(p) => return Ok(p),
            Err(e) => last = format!("{f}: {e}"),
        }
    }
    Err(Error::Hub {
        id: spec.into(),
        reason: format!("no weight file found ({last})"),
    })
}

#[cfg(not(feature = "hub"))]
fn download(spec: &str, _repo: &str, files: &[String]) -> Result<PathBuf> {
    Err(Error::Hub {
        id: spec.into(),
        reason: format!(
            "it is not a local file and none of [{}] is in the local hub cache ({}); \
             build with `--features hub` to download it, or download the file and pass its path",
            files.join(", "),
            hf_hub::Cache::from_env().path().display()
        ),
    })
}

/// Read every tensor of a safetensors or PyTorch file, as stored.
pub fn read_tensors(path: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let werr = |reason: String| Error::WeightFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| werr(e.to_string()))?;
    if meta.is_dir() {
        return Err(werr("is a directory, not a weight file".into()));
    }
    if meta.len() == 0 {
        return Err(werr("the file is empty".into()));
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| werr(e.to_string()))?;
        let _ = f.read(&mut magic).map_err(|e| werr(e.to_string()))?;
    }
    if magic == *b"PK\x03\x04" {
        let mut last = String::new();
        for key in [None, Some("state_dict"), Some("model")] {
            match candle_core::pickle::read_all_with_key(path, key) {
                Ok(v) if !v.is_empty() => return Ok(v),
                Ok(_) => {}
                Err(e) => last = e.to_string(),
            }
        }
        return Err(werr(format!(
            "a PyTorch archive without a readable state dict ({last}); TorchScript (JIT) archives such as \
             OpenAI's ViT-B-16.pt are not supported: use the Hugging Face weights or save `model.state_dict()`"
        )));
    }
    read_safetensors(path, device).map_err(|reason| {
        werr(format!(
            "neither a PyTorch zip archive nor a valid safetensors file ({reason})"
        ))
    })
}

/// The `__metadata__` strings of a safetensors file's header; empty for a PyTorch archive or
/// a header without them.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let werr = |reason: String| Error::WeightFile {
        path: path.display().to_string(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| werr(e.to_string()))?;
    let file_len = f.metadata().map_err(|e| werr(e.to_string()))?.len();
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() || n[..4] == *b"PK\x03\x04" {
        return Ok(HashMap::new());
    }
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > file_len {
        return Ok(HashMap::new());
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| werr(e.to_string()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| werr(format!("unreadable safetensors header: {e}")))?;
    let mut out = HashMap::new();
    if let Some(meta) = header.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            let v = v.as_str().ok_or_else(|| {
                werr(format!(
                    "metadata entry `{k}` is not a string (safetensors metadata maps strings to strings)"
                ))
            })?;
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

/// Write `tensors` with the header `metadata` as a safetensors file at `path`. The file
/// appears whole or not at all (the safetensors crate writes a temporary file and renames it),
/// and with the permissions of any file the user creates: the crate's temporary files are
/// private (0600), which would leave shared weights unreadable to others.
pub fn save_safetensors(
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<()> {
    let werr = |reason: String| Error::WeightFile {
        path: path.display().to_string(),
        reason,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A freshly created file has the user's default permissions (0666 less the umask).
    let probe = dir.join(format!(".segclip-probe-{}", std::process::id()));
    let perms = std::fs::File::create(&probe)
        .and_then(|f| f.metadata())
        .map(|m| m.permissions())
        .map_err(|e| werr(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    safetensors::serialize_to_file(tensors, metadata, path).map_err(|e| werr(e.to_string()))?;
    std::fs::set_permissions(path, perms).map_err(|e| werr(e.to_string()))
}

/// Read a safetensors file one tensor at a time (no memory map), upcasting half precision to
/// f32 as it goes: the peak memory is the tensors plus one tensor's bytes.
fn read_safetensors(
    path: &Path,
    device: &Device,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| "shorter than a safetensors header".to_string())?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > file_len {
        return Err(format!(
            "header length {n} does not fit a {file_len}-byte file"
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("unreadable header: {e}"))?;
    let base = 8 + n;
    let mut entries = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = || format!("tensor `{name}` has a malformed header entry");
        let dtype = match info["dtype"].as_str().ok_or_else(bad)? {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "U32" => DType::U32,
            "U8" => DType::U8,
            other => return Err(format!("tensor `{name}` has unsupported dtype {other}")),
        };
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let off = info["data_offsets"].as_array().ok_or_else(bad)?;
        let start = off.first().and_then(|v| v.as_u64()).ok_or_else(bad)?;
        let end = off.get(1).and_then(|v| v.as_u64()).ok_or_else(bad)?;
        let numel: usize = shape.iter().product();
        if end < start
            || (end - start) as usize != numel * dtype.size_in_bytes()
            || base + end > file_len
        {
            return Err(format!("tensor `{name}`: bytes [{start}, {end}) do not hold {shape:?} {dtype:?} within a {file_len}-byte file"));
        }
        entries.push((start, end, name, dtype, shape));
    }
    entries.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(entries.len());
    for (start, end, name, dtype, shape) in entries {
        let mut bytes = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(base + start))
            .map_err(|e| e.to_string())?;
        f.read_exact(&mut bytes)
            .map_err(|e| format!("tensor `{name}`: {e} (truncated file?)"))?;
        let t =
            Tensor::from_raw_buffer(&bytes, dtype, &shape, device).map_err(|e| e.to_string())?;
        drop(bytes);
        let t = if matches!(dtype, DType::F16 | DType::BF16 | DType::F64) {
            t.to_dtype(DType::F32).map_err(|e| e.to_string())?
        } else {
            t
        };
        out.push((name, t));
    }
    Ok(out)
}

/// A `VarBuilder` backend that hands each tensor over to the model and forgets it, so that a
/// layer that re-lays out its weight (see [`crate::linear::Linear`]) frees the original at once.
struct Taking {
    tensors: std::sync::Mutex<HashMap<String, Tensor>>,
}

impl candle_nn::var_builder::SimpleBackend for Taking {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .tensors
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned weight store".into()))?
            .remove(name);
        let t = t.ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors
            .lock()
            .map(|m| m.contains_key(name))
            .unwrap_or(false)
    }
}

fn detect(keys: &[&str]) -> Option<KeyFormat> {
    if keys
        .iter()
        .any(|k| k.starts_with("clip.") || k.starts_with("vis_mae_decoder."))
    {
        Some(KeyFormat::SegClip)
    } else if keys
        .iter()
        .any(|k| k.starts_with("vision_model.") || k.starts_with("text_model."))
    {
        Some(KeyFormat::HfClip)
    } else if keys.iter().any(|k| k.starts_with("visual.")) {
        Some(KeyFormat::OpenAiClip)
    } else {
        None
    }
}

/// OpenAI CLIP key → SegCLIP key (spec 5.3); `None` for the metadata entries SegCLIP drops.
fn rename_openai(key: &str, first_stage_layer: usize) -> Option<String> {
    if matches!(key, "input_resolution" | "context_length" | "vocab_size") {
        return None;
    }
    if let Some(rest) = key.strip_prefix("visual.transformer.resblocks.") {
        let (n, tail) = rest.split_once('.')?;
        let n: usize = n.parse().ok()?;
        return Some(if n < first_stage_layer {
            format!("clip.visual.transformer.layers0.{n}.{tail}")
        } else {
            format!(
                "clip.visual.transformer.layers2.{}.{tail}",
                n - first_stage_layer
            )
        });
    }
    Some(format!("clip.{key}"))
}

/// Hugging Face CLIP key → OpenAI CLIP key, or a q/k/v part to pack.
enum HfKey {
    Plain(String, bool),
    Qkv { target: String, part: usize },
    Drop,
}

fn rename_hf(key: &str) -> HfKey {
    let layer_tail = |tail: &str| -> Option<HfKey> {
        let t = match tail {
            "layer_norm1.weight" => "ln_1.weight",
            "layer_norm1.bias" => "ln_1.bias",
            "layer_norm2.weight" => "ln_2.weight",
            "layer_norm2.bias" => "ln_2.bias",
            "mlp.fc1.weight" => "mlp.c_fc.weight",
            "mlp.fc1.bias" => "mlp.c_fc.bias",
            "mlp.fc2.weight" => "mlp.c_proj.weight",
            "mlp.fc2.bias" => "mlp.c_proj.bias",
            "self_attn.out_proj.weight" => "attn.out_proj.weight",
            "self_attn.out_proj.bias" => "attn.out_proj.bias",
            _ => {
                for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    if let Some(kind) = tail.strip_prefix(&format!("self_attn.{p}.")) {
                        return Some(HfKey::Qkv {
                            target: format!("attn.in_proj_{kind}"),
                            part: i,
                        });
                    }
                }
                return None;
            }
        };
        Some(HfKey::Plain(t.to_string(), false))
    };
    let prefixed = |prefix: &str, k: HfKey| match k {
        HfKey::Plain(t, tr) => HfKey::Plain(format!("{prefix}{t}"), tr),
        HfKey::Qkv { target, part } => HfKey::Qkv {
            target: format!("{prefix}{target}"),
            part,
        },
        HfKey::Drop => HfKey::Drop,
    };
    for (hf, ours) in [
        (
            "vision_model.encoder.layers.",
            "visual.transformer.resblocks.",
        ),
        ("text_model.encoder.layers.", "transformer.resblocks."),
    ] {
        if let Some(rest) = key.strip_prefix(hf) {
            if let Some((n, tail)) = rest.split_once('.') {
                if let Some(k) = layer_tail(tail) {
                    return prefixed(&format!("{ours}{n}."), k);
                }
            }
            return HfKey::Plain(format!("unknown.{key}"), false);
        }
    }
    let plain = |s: &str| HfKey::Plain(s.to_string(), false);
    match key {
        "vision_model.embeddings.patch_embedding.weight" => plain("visual.conv1.weight"),
        "vision_model.embeddings.class_embedding" => plain("visual.class_embedding"),
        "vision_model.embeddings.position_embedding.weight" => plain("visual.positional_embedding"),
        "vision_model.pre_layrnorm.weight" => plain("visual.ln_pre.weight"),
        "vision_model.pre_layrnorm.bias" => plain("visual.ln_pre.bias"),
        "vision_model.post_layernorm.weight" => plain("visual.ln_post.weight"),
        "vision_model.post_layernorm.bias" => plain("visual.ln_post.bias"),
        "visual_projection.weight" => HfKey::Plain("visual.proj".into(), true),
        "text_model.embeddings.token_embedding.weight" => plain("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight" => plain("positional_embedding"),
        "text_model.final_layer_norm.weight" => plain("ln_final.weight"),
        "text_model.final_layer_norm.bias" => plain("ln_final.bias"),
        "text_projection.weight" => HfKey::Plain("text_projection".into(), true),
        "logit_scale" => plain("logit_scale"),
        "vision_model.embeddings.position_ids" | "text_model.embeddings.position_ids" => {
            HfKey::Drop
        }
        _ => HfKey::Plain(format!("unknown.{key}"), false),
    }
}

impl StateDict {
    /// Read `spec` (a path or hub id) and rename its tensors to SegCLIP keys. `first_stage_layer`
    /// is where the group module sits (10): CLIP visual blocks before it become `layers0`, the
    /// rest `layers2`.
    pub fn load(spec: &str, first_stage_layer: usize, device: &Device) -> Result<Self> {
        let path = resolve(spec)?;
        let raw = read_tensors(&path, device)?;
        let mut sd = Self::from_tensors(raw, &path.display().to_string(), first_stage_layer)?;
        sd.metadata = read_metadata(&path)?;
        Ok(sd)
    }

    /// Rename already-read tensors (see [`StateDict::load`]).
    pub fn from_tensors(
        raw: Vec<(String, Tensor)>,
        source: &str,
        first_stage_layer: usize,
    ) -> Result<Self> {
        let raw: Vec<(String, Tensor)> = raw
            .into_iter()
            .map(|(k, t)| {
                (
                    k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                    t,
                )
            })
            .collect();
        let keys: Vec<&str> = raw.iter().map(|(k, _)| k.as_str()).collect();
        let format = detect(&keys).ok_or_else(|| Error::WeightFile {
            path: source.into(),
            reason: format!(
                "not a SegCLIP or CLIP checkpoint: none of its {} keys looks like one (first keys: {})",
                keys.len(),
                keys.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        let mut tensors = HashMap::new();
        let mut qkv: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
        for (k, t) in raw {
            let t = if t.dtype() == DType::F32 {
                t
            } else if t.dtype().is_float() {
                t.to_dtype(DType::F32)?
            } else {
                t
            };
            match format {
                KeyFormat::SegClip => {
                    tensors.insert(k, t);
                }
                KeyFormat::OpenAiClip => {
                    if let Some(name) = rename_openai(&k, first_stage_layer) {
                        tensors.insert(name, t);
                    }
                }
                KeyFormat::HfClip => match rename_hf(&k) {
                    HfKey::Drop => {}
                    HfKey::Plain(name, transpose) => {
                        let t = if transpose { t.t()?.contiguous()? } else { t };
                        if let Some(name) = rename_openai(&name, first_stage_layer) {
                            tensors.insert(name, t);
                        }
                    }
                    HfKey::Qkv { target, part } => {
                        qkv.entry(target).or_default()[part] = Some(t);
                    }
                },
            }
        }
        for (target, parts) in qkv {
            let [Some(q), Some(k), Some(v)] = parts else {
                return Err(Error::MissingKeys {
                    path: source.into(),
                    count: 1,
                    examples: format!("q/k/v projections of {target}"),
                });
            };
            if let Some(name) = rename_openai(&target, first_stage_layer) {
                tensors.insert(name, Tensor::cat(&[q, k, v], 0)?);
            }
        }
        Ok(Self {
            tensors,
            source: source.into(),
            format,
            metadata: HashMap::new(),
        })
    }

    /// Compare with the tensors a model expects. Every key of `required` must be present with its
    /// shape; keys of `optional` may be absent but must have their shape when present; any other
    /// key is an error (another model's checkpoint).
    pub fn check(&self, required: &[KeySpec], optional: &[KeySpec]) -> Result<()> {
        let mut missing = Vec::new();
        for (key, shape) in required.iter().chain(optional) {
            match self.tensors.get(key) {
                None => {
                    if required.iter().any(|(k, _)| k == key) {
                        missing.push(key.clone());
                    }
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(Error::ShapeMismatch {
                        path: self.source.clone(),
                        key: key.clone(),
                        expected: shape.clone(),
                        found: t.dims().to_vec(),
                    });
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = required
            .iter()
            .chain(optional)
            .map(|(k, _)| k.as_str())
            .collect();
        let mut unexpected: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        unexpected.sort();
        if !unexpected.is_empty() {
            return Err(Error::UnexpectedKeys {
                path: self.source.clone(),
                count: unexpected.len(),
                examples: unexpected
                    .iter()
                    .take(3)
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(Error::MissingKeys {
                path: self.source.clone(),
                count: missing.len(),
                examples: missing
                    .iter()
                    .take(3)
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(())
    }

    /// A detached (no-gradient) `VarBuilder` over these tensors.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, device)
    }

    /// A detached `VarBuilder` that gives each tensor away on first use (each key can be read
    /// once): building a model from it keeps the peak memory near the size of the weights.
    pub fn into_var_builder(self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(Taking {
                tensors: std::sync::Mutex::new(self.tensors),
            }),
            DType::F32,
            device.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, DType::F16, &Device::Cpu).unwrap()
    }

    #[test]
    fn openai_names_are_renamed_as_spec_5_3() {
        let raw = vec![
            (
                "visual.transformer.resblocks.3.ln_1.weight".to_string(),
                t(&[4]),
            ),
            (
                "visual.transformer.resblocks.11.mlp.c_fc.bias".to_string(),
                t(&[4]),
            ),
            ("token_embedding.weight".to_string(), t(&[2, 4])),
            ("input_resolution".to_string(), t(&[])),
        ];
        let sd = StateDict::from_tensors(raw, "mem", 10).unwrap();
        assert_eq!(sd.format, KeyFormat::OpenAiClip);
        let mut keys: Vec<_> = sd.tensors.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "clip.token_embedding.weight",
                "clip.visual.transformer.layers0.3.ln_1.weight",
                "clip.visual.transformer.layers2.1.mlp.c_fc.bias"
            ]
        );
        assert!(
            sd.tensors.values().all(|t| t.dtype() == DType::F32),
            "f16 is upcast"
        );
    }

    #[test]
    fn hf_qkv_is_packed_and_projections_transposed() {
        let dev = Device::Cpu;
        let q = Tensor::full(1f32, (2, 2), &dev).unwrap();
        let k = Tensor::full(2f32, (2, 2), &dev).unwrap();
        let v = Tensor::full(3f32, (2, 2), &dev).unwrap();
        let proj = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &dev).unwrap(); // (out 3, in 2)
        let p = "text_model.encoder.layers.0.self_attn.";
        let raw = vec![
            (format!("{p}q_proj.weight"), q),
            (format!("{p}k_proj.weight"), k),
            (format!("{p}v_proj.weight"), v),
            ("visual_projection.weight".into(), proj),
            ("text_model.embeddings.position_ids".into(), t(&[1, 77])),
        ];
        let sd = StateDict::from_tensors(raw, "mem", 10).unwrap();
        assert_eq!(sd.format, KeyFormat::HfClip);
        let packed = &sd.tensors["clip.transformer.resblocks.0.attn.in_proj_weight"];
        assert_eq!(
            packed.to_vec2::<f32>().unwrap(),
            vec![
                vec![1., 1.],
                vec![1., 1.],
                vec![2., 2.],
                vec![2., 2.],
                vec![3., 3.],
                vec![3., 3.]
            ]
        );
        assert_eq!(
            sd.tensors["clip.visual.proj"].to_vec2::<f32>().unwrap(),
            vec![vec![1., 3., 5.], vec![2., 4., 6.]]
        );
        assert_eq!(sd.tensors.len(), 2);
    }

    #[test]
    fn check_names_missing_unexpected_and_misshaped_keys() {
        let raw = vec![
            ("clip.a".to_string(), t(&[2, 3])),
            ("clip.b".to_string(), t(&[4])),
        ];
        let sd = StateDict::from_tensors(raw, "ckpt.bin", 10).unwrap();
        let req = |k: &str, s: &[usize]| (k.to_string(), s.to_vec());
        let err = sd
            .check(&[req("clip.a", &[3, 2]), req("clip.b", &[4])], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clip.a") && err.contains("[3, 2]") && err.contains("[2, 3]"),
            "{err}"
        );
        let err = sd
            .check(
                &[
                    req("clip.a", &[2, 3]),
                    req("clip.b", &[4]),
                    req("clip.c", &[1]),
                ],
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing 1") && err.contains("clip.c"), "{err}");
        let err = sd
            .check(&[req("clip.a", &[2, 3])], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not know") && err.contains("clip.b"),
            "{err}"
        );
        sd.check(
            &[req("clip.a", &[2, 3])],
            &[req("clip.b", &[4]), req("clip.z", &[9])],
        )
        .unwrap();
    }

    #[test]
    fn other_models_and_bad_files_are_named() {
        let raw = vec![("encoder.layer.0.weight".to_string(), t(&[2]))];
        let err = StateDict::from_tensors(raw, "bert.bin", 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a SegCLIP or CLIP checkpoint"), "{err}");
        let dir = std::env::temp_dir().join(format!("segclip-vit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        let err = read_tensors(&empty, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let junk = dir.join("junk.safetensors");
        std::fs::write(&junk, b"this is not a tensor file at all").unwrap();
        let err = read_tensors(&junk, &Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("junk.safetensors") && err.contains("safetensors"),
            "{err}"
        );
        let err = resolve(dir.join("nope.bin").to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
