//! Image–caption datasets for training (spec section 3.2), read natively:
//!
//! - **WebDataset shards** as img2dataset writes CC3M: `.tar` files whose members
//!   `{key}.jpg|png|webp`, `{key}.txt` (caption) and `{key}.json` share a key. Shards are indexed
//!   once (captions kept, image bytes located by offset) and images are read on demand.
//! - **Parquet + image folders** as img2dataset's `files` output writes them: `{shard}.parquet`
//!   (key, caption, status) beside `{shard}/{key}.jpg`; failed downloads are left out.
//! - **TSV + image folder**: `caption<TAB>image path` lines (paths relative to the folder), the
//!   layout of CC3M's own `Train_GCC-training.tsv` once images are downloaded by key.
//! - **COCO captions**, Karpathy split (`dataset_coco.json` + image root): one sample per caption,
//!   as the official loader does (each image ≈ 5× per epoch), split `train` only by default.
//! - **JSONL**: one `{"image": path, "caption": text}` per line, paths relative to the file.
//!
//! [`CaptionDataset::epoch_order`] shuffles with a seed; [`CaptionDataset::load_batch`] decodes a
//! batch in parallel and skips (and counts) unreadable images instead of failing the epoch.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use segclip_group::zeroshot::RgbImage;

use crate::error::{file_err, Error, Result};
use crate::transforms::Rng;

/// Where a sample's image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    File(PathBuf),
    /// `len` bytes at `offset` of a tar shard.
    TarMember {
        shard: Arc<PathBuf>,
        offset: u64,
        len: u64,
    },
}

/// One (image, caption) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRecord {
    /// A stable identity of the image (for caches): shard/key or the image path.
    pub key: String,
    pub caption: String,
    pub image: ImageRef,
}

/// A decoded sample.
#[derive(Debug, Clone)]
pub struct CaptionSample {
    pub key: String,
    pub caption: String,
    pub image: RgbImage,
}

/// A caption dataset: its records in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct CaptionDataset {
    pub records: Vec<CaptionRecord>,
}

const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

impl CaptionDataset {
    /// Index WebDataset `.tar` shards (a folder of them or explicit files).
    pub fn webdataset(shards: &[PathBuf]) -> Result<Self> {
        let mut records = Vec::new();
        for shard in shards {
            let f = std::fs::File::open(shard).map_err(|e| file_err(shard, e))?;
            let mut ar = tar::Archive::new(f);
            let shard_rc = Arc::new(shard.clone());
            let mut images: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
            let mut captions: std::collections::HashMap<String, String> = Default::default();
            for entry in ar.entries().map_err(|e| file_err(shard, e))? {
                let mut entry = entry.map_err(|e| file_err(shard, format!("corrupt tar: {e}")))?;
                let path = entry
                    .path()
                    .map_err(|e| file_err(shard, e))?
                    .to_string_lossy()
                    .to_string();
                let Some((key, ext)) = path.rsplit_once('.') else {
                    continue;
                };
                let ext = ext.to_ascii_lowercase();
                if IMAGE_EXTS.contains(&ext.as_str()) {
                    images.insert(key.to_string(), (entry.raw_file_position(), entry.size()));
                } else if ext == "txt" {
                    let mut s = String::new();
                    if entry.read_to_string(&mut s).is_ok() {
                        captions.insert(key.to_string(), s.trim().to_string());
                    }
                }
            }
            for (key, (offset, len)) in images {
                if let Some(caption) = captions.remove(&key) {
                    records.push(CaptionRecord {
                        key: format!(
                            "{}/{key}",
                            shard
                                .file_name()
                                .and_then(|n| n.to_str())
                                .unwrap_or("shard")
                        ),
                        caption,
                        image: ImageRef::TarMember {
                            shard: shard_rc.clone(),
                            offset,
                            len,
                        },
                    });
                }
            }
        }
        Ok(Self { records })
    }

    /// All `.tar` files of a folder, sorted.
    pub fn webdataset_dir(dir: &Path) -> Result<Self> {
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| file_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(Error::Layout {
                dataset: "WebDataset".into(),
                what: "at least one .tar shard".into(),
                path: dir.display().to_string(),
            });
        }
        Self::webdataset(&shards)
    }

    /// img2dataset's `files` layout: `{shard}.parquet` tables (columns `key`, `caption`, and
    /// `status`, where rows other than `success` are failed downloads and skipped) beside
    /// `{shard}/{key}.jpg` image folders.
    pub fn parquet_dir(dir: &Path) -> Result<Self> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::Field;
        let mut tables: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| file_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        tables.sort();
        if tables.is_empty() {
            return Err(Error::Layout {
                dataset: "img2dataset parquet".into(),
                what: "at least one .parquet table".into(),
                path: dir.display().to_string(),
            });
        }
        let mut records = Vec::new();
        for table in &tables {
            let bad = |e: &dyn std::fmt::Display| {
                file_err(table, format!("not a readable parquet table: {e}"))
            };
            let file = std::fs::File::open(table).map_err(|e| file_err(table, e))?;
            let reader = SerializedFileReader::new(file).map_err(|e| bad(&e))?;
            let columns: Vec<String> = reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            for need in ["key", "caption"] {
                if !columns.iter().any(|c| c == need) {
                    return Err(file_err(
                        table,
                        format!("no `{need}` column (columns: {})", columns.join(", ")),
                    ));
                }
            }
            if columns.iter().any(|c| c == "jpg") {
                return Err(file_err(
                    table,
                    "images are embedded in the table (img2dataset --output_format parquet); \
                     write them as files or webdataset shards instead",
                ));
            }
            let folder = dir.join(table.file_stem().unwrap_or_default());
            for row in reader.get_row_iter(None).map_err(|e| bad(&e))? {
                let row = row.map_err(|e| bad(&e))?;
                let (mut key, mut caption, mut ok) = (None, None, true);
                for (name, field) in row.get_column_iter() {
                    let text = match field {
                        Field::Str(v) => Some(v.clone()),
                        Field::Long(v) => Some(v.to_string()),
                        Field::Int(v) => Some(v.to_string()),
                        _ => None,
                    };
                    match name.as_str() {
                        "key" => key = text,
                        "caption" => caption = text,
                        "status" => ok = text.as_deref() == Some("success"),
                        _ => {}
                    }
                }
                let (Some(key), Some(caption), true) = (key, caption, ok) else {
                    continue;
                };
                let image = IMAGE_EXTS
                    .iter()
                    .map(|ext| folder.join(format!("{key}.{ext}")))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| folder.join(format!("{key}.jpg")));
                records.push(CaptionRecord {
                    key: image.display().to_string(),
                    caption,
                    image: ImageRef::File(image),
                });
            }
        }
        Ok(Self { records })
    }

    /// `caption<TAB>image` lines; image paths relative to `image_root`.
    pub fn tsv(path: &Path, image_root: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((caption, image)) = line.split_once('\t') else {
                return Err(file_err(
                    path,
                    format!("line {}: expected caption<TAB>image", n + 1),
                ));
            };
            let image = image.trim();
            records.push(CaptionRecord {
                key: image.to_string(),
                caption: caption.trim().to_string(),
                image: ImageRef::File(image_root.join(image)),
            });
        }
        Ok(Self { records })
    }

    /// COCO captions from Karpathy's `dataset_coco.json`: one record per caption of `split`
    /// (`train`; `restval` is not used, as in the official code).
    pub fn coco_karpathy(json: &Path, image_root: &Path, split: &str) -> Result<Self> {
        let text = std::fs::read_to_string(json).map_err(|e| file_err(json, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_err(json, e))?;
        let images = v["images"]
            .as_array()
            .ok_or_else(|| file_err(json, "no `images` array: not a Karpathy dataset_coco.json"))?;
        let mut records = Vec::new();
        for img in images {
            if img["split"].as_str() != Some(split) {
                continue;
            }
            let (Some(dir), Some(name)) = (img["filepath"].as_str(), img["filename"].as_str())
            else {
                continue;
            };
            for s in img["sentences"].as_array().into_iter().flatten() {
                if let Some(raw) = s["raw"].as_str() {
                    records.push(CaptionRecord {
                        key: format!("{dir}/{name}"),
                        caption: raw.trim().to_string(),
                        image: ImageRef::File(image_root.join(dir).join(name)),
                    });
                }
            }
        }
        Ok(Self { records })
    }

    /// `{"image": …, "caption": …}` per line; image paths relative to the file's folder.
    pub fn jsonl(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| file_err(path, format!("line {}: {e}", n + 1)))?;
            let (Some(image), Some(caption)) = (v["image"].as_str(), v["caption"].as_str()) else {
                return Err(file_err(
                    path,
                    format!("line {}: needs \"image\" and \"caption\" strings", n + 1),
                ));
            };
            records.push(CaptionRecord {
                key: image.to_string(),
                caption: caption.to_string(),
                image: ImageRef::File(base.join(image)),
            });
        }
        Ok(Self { records })
    }

    /// Keep the first `n` records.
    pub fn limit(mut self, n: usize) -> Self {
        self.records.truncate(n);
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record order of epoch `epoch`: a Fisher–Yates shuffle seeded by (seed, epoch).
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut order: Vec<usize> = (0..self.records.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(0, i + 1));
        }
        order
    }

    /// Decode the records `indices` in parallel. Unreadable or missing images are skipped; the
    /// second value counts them.
    pub fn load_batch(&self, indices: &[usize]) -> (Vec<CaptionSample>, usize) {
        let loaded: Vec<Option<CaptionSample>> = indices
            .par_iter()
            .map(|&i| {
                let r = &self.records[i];
                let image = decode(&r.image).ok()?;
                Some(CaptionSample {
                    key: r.key.clone(),
                    caption: r.caption.clone(),
                    image,
                })
            })
            .collect();
        let skipped = loaded.iter().filter(|s| s.is_none()).count();
        (loaded.into_iter().flatten().collect(), skipped)
    }
}

/// Read and decode one image as RGB8.
pub fn decode(r: &ImageRef) -> Result<RgbImage> {
    let (bytes, name) = match r {
        ImageRef::File(p) => (
            std::fs::read(p).map_err(|e| file_err(p, e))?,
            p.display().to_string(),
        ),
        ImageRef::TarMember { shard, offset, len } => {
            let mut f = std::fs::File::open(shard.as_ref()).map_err(|e| file_err(shard, e))?;
            f.seek(SeekFrom::Start(*offset))
                .map_err(|e| file_err(shard, e))?;
            let mut b = vec![0u8; *len as usize];
            f.read_exact(&mut b).map_err(|e| file_err(shard, e))?;
            (b, format!("{}@{offset}", shard.display()))
        }
    };
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::Image {
            path: name.clone(),
            reason: e.to_string(),
        })?
        .into_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    RgbImage::new(w, h, img.into_raw()).map_err(|e| Error::Image {
        path: name,
        reason: e.to_string(),
    })
}
