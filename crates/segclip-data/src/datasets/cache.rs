//! A superpixel cache beside the data: computed on first use, stored as 16-bit PNGs under
//! `<root>/.segclip-cache/superpixels/<method and every parameter>/<image key>.png`, so later
//! epochs do no superpixel work, and a cache made with other parameters is never read (it lives
//! under another folder name). Files are written atomically; a file whose size does not match
//! the image is recomputed.

use std::path::{Path, PathBuf};

use crate::error::{file_err, Result};
use crate::superpixels::{LabelMap, Method};

#[derive(Debug, Clone)]
pub struct SuperpixelCache {
    dir: PathBuf,
    method: Method,
}

fn file_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Keys that sanitise alike stay apart through a hash of the original.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{safe}.{h:016x}.png")
}

impl SuperpixelCache {
    pub fn new(root: &Path, method: Method) -> Self {
        Self {
            dir: root
                .join(".segclip-cache")
                .join("superpixels")
                .join(method.key()),
            method,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The label map of `rgb` (h, w) known as `key`, from the cache or computed and stored.
    pub fn get(&self, key: &str, rgb: &[u8], (h, w): (usize, usize)) -> Result<LabelMap> {
        let path = self.dir.join(file_name(key));
        if let Ok((lw, lh, labels)) = read_gray16(&path) {
            if (lh, lw) == (h, w) {
                let count = labels.iter().max().map_or(0, |&m| m as usize + 1);
                return Ok(LabelMap {
                    height: h,
                    width: w,
                    labels,
                    count,
                });
            }
        }
        let map = self.method.run(rgb, (h, w));
        std::fs::create_dir_all(&self.dir).map_err(|e| file_err(&self.dir, e))?;
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        write_gray16(&tmp, w, h, &map.labels)?;
        std::fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))?;
        Ok(map)
    }
}

fn write_gray16(path: &Path, w: usize, h: usize, labels: &[u32]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| file_err(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    let data: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l.min(65535) as u16).to_be_bytes())
        .collect();
    let mut wr = enc.write_header().map_err(|e| file_err(path, e))?;
    wr.write_image_data(&data).map_err(|e| file_err(path, e))?;
    wr.finish().map_err(|e| file_err(path, e))
}

fn read_gray16(path: &Path) -> Result<(usize, usize, Vec<u32>)> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(f));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut r = dec.read_info().map_err(|e| file_err(path, e))?;
    let (w, h) = (r.info().width as usize, r.info().height as usize);
    if r.info().bit_depth != png::BitDepth::Sixteen {
        return Err(file_err(path, "not a 16-bit label map"));
    }
    let mut buf = vec![
        0u8;
        r.output_buffer_size()
            .ok_or_else(|| file_err(path, "too large"))?
    ];
    r.next_frame(&mut buf).map_err(|e| file_err(path, e))?;
    Ok((
        w,
        h,
        buf.chunks_exact(2)
            .take(w * h)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .collect(),
    ))
}
