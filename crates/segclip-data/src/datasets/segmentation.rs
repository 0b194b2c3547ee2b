//! Segmentation datasets for evaluation, in the layouts mmseg documents (spec section 4.6):
//!
//! | dataset | root | images | labels | split list |
//! |---|---|---|---|---|
//! | PASCAL VOC 2012 | `VOCdevkit/VOC2012` | `JPEGImages/{id}.jpg` | `SegmentationClass/{id}.png` (palette; 255 = ignore) | `ImageSets/Segmentation/{split}.txt` |
//! | PASCAL Context | `VOCdevkit/VOC2010` | `JPEGImages/{id}.jpg` | `SegmentationClassContext/{id}.png` (0 = background) | `ImageSets/SegmentationContext/{split}.txt` |
//! | COCO-Object | `coco_stuff164k` | `images/{split}2017/{id}.jpg` | `annotations/{split}2017/{id}_instanceTrainIds.png`, or COCO-Stuff's `{id}.png` mapped on the fly | the label files present |
//! | VOC-layout folder | any | `JPEGImages/{id}.{jpg,png}` | `SegmentationClass/{id}.png` | `ImageSets/Segmentation/{split}.txt`, classes in `classes.txt` |
//!
//! Label PNGs are read as raw indices (palette indices are not turned into colours).

use std::path::{Path, PathBuf};

use super::classes::{coco_object_id, COCO_OBJECT, CONTEXT, VOC};
use crate::error::{file_err, Error, Result};

/// Which dataset, which decides class names, label mapping and the official background threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegKind {
    Voc,
    Context,
    CocoObject,
    /// A folder in the VOC layout with its own `classes.txt`.
    Folder,
}

impl SegKind {
    /// The official background threshold (spec 4.5): VOC 0.80, Context 0.25, COCO 0.65.
    pub fn bg_thresh(self) -> f32 {
        match self {
            SegKind::Voc | SegKind::Folder => 0.80,
            SegKind::Context => 0.25,
            SegKind::CocoObject => 0.65,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSample {
    pub id: String,
    pub image: PathBuf,
    pub label: PathBuf,
    /// The label file holds COCO-Stuff ids to be mapped to COCO-Object.
    pub map_coco: bool,
}

/// A segmentation split: class names (background first) and samples.
#[derive(Debug, Clone)]
pub struct SegDataset {
    pub kind: SegKind,
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<SegSample>,
}

fn need(dataset: &str, what: &str, p: &Path) -> Result<()> {
    if p.exists() {
        Ok(())
    } else {
        Err(Error::Layout {
            dataset: dataset.into(),
            what: what.into(),
            path: p.display().to_string(),
        })
    }
}

fn read_ids(list: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(list).map_err(|e| file_err(list, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn voc_layout(
    name: &str,
    root: &Path,
    label_dir: &str,
    list_dir: &str,
    split: &str,
) -> Result<Vec<SegSample>> {
    let (img_dir, lab_dir) = (root.join("JPEGImages"), root.join(label_dir));
    let list = root
        .join("ImageSets")
        .join(list_dir)
        .join(format!("{split}.txt"));
    need(name, "the image folder JPEGImages", &img_dir)?;
    need(name, &format!("the label folder {label_dir}"), &lab_dir)?;
    need(
        name,
        &format!("the split list ImageSets/{list_dir}/{split}.txt"),
        &list,
    )?;
    read_ids(&list)?
        .into_iter()
        .map(|id| {
            let jpg = img_dir.join(format!("{id}.jpg"));
            let image = if jpg.exists() {
                jpg
            } else {
                img_dir.join(format!("{id}.png"))
            };
            Ok(SegSample {
                label: lab_dir.join(format!("{id}.png")),
                image,
                id,
                map_coco: false,
            })
        })
        .collect()
}

impl SegDataset {
    /// PASCAL VOC 2012 (`root` = `VOCdevkit/VOC2012`), 21 classes.
    pub fn voc(root: &Path, split: &str) -> Result<Self> {
        let samples = voc_layout(
            "PASCAL VOC",
            root,
            "SegmentationClass",
            "Segmentation",
            split,
        )?;
        Ok(Self {
            kind: SegKind::Voc,
            root: root.into(),
            classes: VOC.map(String::from).to_vec(),
            samples,
        })
    }

    /// PASCAL Context, 59 classes + background (`root` = `VOCdevkit/VOC2010`).
    pub fn context(root: &Path, split: &str) -> Result<Self> {
        let samples = voc_layout(
            "PASCAL Context",
            root,
            "SegmentationClassContext",
            "SegmentationContext",
            split,
        )?;
        Ok(Self {
            kind: SegKind::Context,
            root: root.into(),
            classes: CONTEXT.map(String::from).to_vec(),
            samples,
        })
    }

    /// COCO-Object from COCO-Stuff-164k (`root` = `coco_stuff164k`, split `val`).
    pub fn coco_object(root: &Path, split: &str) -> Result<Self> {
        let img_dir = root.join("images").join(format!("{split}2017"));
        let ann_dir = root.join("annotations").join(format!("{split}2017"));
        need(
            "COCO-Object",
            &format!("the image folder images/{split}2017"),
            &img_dir,
        )?;
        need(
            "COCO-Object",
            &format!("the annotation folder annotations/{split}2017"),
            &ann_dir,
        )?;
        let mut samples = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&img_dir)
            .map_err(|e| file_err(&img_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for img in entries {
            let Some(id) = img.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            let converted = ann_dir.join(format!("{id}_instanceTrainIds.png"));
            let raw = ann_dir.join(format!("{id}.png"));
            let (label, map_coco) = if converted.exists() {
                (converted, false)
            } else if raw.exists() {
                (raw, true)
            } else {
                return Err(Error::Layout {
                    dataset: "COCO-Object".into(),
                    what: format!("the annotation of image {id}"),
                    path: converted.display().to_string(),
                });
            };
            samples.push(SegSample {
                id,
                image: img,
                label,
                map_coco,
            });
        }
        Ok(Self {
            kind: SegKind::CocoObject,
            root: root.into(),
            classes: COCO_OBJECT.map(String::from).to_vec(),
            samples,
        })
    }

    /// A folder in the VOC layout with `classes.txt` (one name a line, background first).
    pub fn folder(root: &Path, split: &str) -> Result<Self> {
        let classes_file = root.join("classes.txt");
        need(
            "VOC-layout folder",
            "the class list classes.txt",
            &classes_file,
        )?;
        let classes = read_ids(&classes_file)?;
        let samples = voc_layout(
            "VOC-layout folder",
            root,
            "SegmentationClass",
            "Segmentation",
            split,
        )?;
        Ok(Self {
            kind: SegKind::Folder,
            root: root.into(),
            classes,
            samples,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The label map of sample `i` as (width, height, labels), 255 = ignore.
    pub fn label(&self, i: usize) -> Result<(usize, usize, Vec<u8>)> {
        let s = &self.samples[i];
        let (w, h, mut v) = read_index_png(&s.label)?;
        if s.map_coco {
            v.iter_mut().for_each(|l| *l = coco_object_id(*l));
        }
        Ok((w, h, v))
    }
}

/// Read a PNG's raw 8-bit sample values (palette indices for indexed images, the gray value
/// otherwise): (width, height, values).
pub fn read_index_png(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(f));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| file_err(path, e))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    let (color, depth) = (reader.info().color_type, reader.info().bit_depth);
    if depth != png::BitDepth::Eight
        || !matches!(color, png::ColorType::Indexed | png::ColorType::Grayscale)
    {
        return Err(file_err(
            path,
            format!("a label map must be 8-bit indexed or grayscale, found {color:?} {depth:?}"),
        ));
    }
    let mut buf = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| file_err(path, "image too large"))?
    ];
    let info = reader.next_frame(&mut buf).map_err(|e| file_err(path, e))?;
    buf.truncate(info.buffer_size());
    if buf.len() != w * h {
        return Err(file_err(path, "unexpected label buffer size"));
    }
    Ok((w, h, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: usize, h: usize, data: &[u8], indexed: bool) {
        let f = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(f, w as u32, h as u32);
        if indexed {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(
                (0..256u32)
                    .flat_map(|i| [i as u8, 0, 0])
                    .collect::<Vec<u8>>(),
            );
        } else {
            enc.set_color(png::ColorType::Grayscale);
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
    }

    #[test]
    fn voc_layout_is_read_and_missing_paths_are_named() {
        let root = std::env::temp_dir().join(format!("segclip-voc-{}", std::process::id()));
        let err = SegDataset::voc(&root, "val").unwrap_err().to_string();
        assert!(
            err.contains("JPEGImages") && err.contains("PASCAL VOC"),
            "{err}"
        );
        std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
        std::fs::create_dir_all(root.join("SegmentationClass")).unwrap();
        let err = SegDataset::voc(&root, "val").unwrap_err().to_string();
        assert!(err.contains("ImageSets/Segmentation/val.txt"), "{err}");
        std::fs::create_dir_all(root.join("ImageSets/Segmentation")).unwrap();
        std::fs::write(root.join("ImageSets/Segmentation/val.txt"), "a\nb\n").unwrap();
        write_png(
            &root.join("SegmentationClass/a.png"),
            2,
            2,
            &[0, 15, 255, 3],
            true,
        );
        let ds = SegDataset::voc(&root, "val").unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.classes.len(), 21);
        assert_eq!(ds.label(0).unwrap(), (2, 2, vec![0, 15, 255, 3]));
        assert!(ds.label(1).unwrap_err().to_string().contains("b.png"));
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn coco_stuff_labels_are_mapped_to_coco_object() {
        let root = std::env::temp_dir().join(format!("segclip-coco-{}", std::process::id()));
        std::fs::create_dir_all(root.join("images/val2017")).unwrap();
        std::fs::create_dir_all(root.join("annotations/val2017")).unwrap();
        std::fs::write(root.join("images/val2017/000001.jpg"), b"jpg").unwrap();
        write_png(
            &root.join("annotations/val2017/000001.png"),
            4,
            1,
            &[0, 12, 150, 255],
            false,
        );
        let ds = SegDataset::coco_object(&root, "val").unwrap();
        assert_eq!(ds.classes.len(), 81);
        assert_eq!(ds.label(0).unwrap().2, vec![1, 12, 0, 0]);
        assert_eq!(ds.kind.bg_thresh(), 0.65);
        std::fs::remove_dir_all(root).ok();
    }
}
