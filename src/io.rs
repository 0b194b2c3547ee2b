//! Reading images safely and writing segmentation results.
//!
//! Reading: the header is read first and an image over the pixel limit is refused before any
//! pixel buffer exists; decoding runs under `image`'s allocation limits; gray, RGBA, 16-bit and
//! palette images become 8-bit RGB (alpha dropped). Every failure names the file and the problem.
//!
//! Writing: files are written to a temporary name in the target folder and renamed into place,
//! so an interrupted run never leaves a half-written result or clobbers an older one.

/// `println!` that ignores a closed standard output: `segclip eval ... | head` ends quietly and
/// the command still writes its files, where `println!` would panic on the broken pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use segclip_group::zeroshot::{RgbImage, Segmentation};

/// Errors of image input and result output.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: no such file")]
    Missing { path: String },
    #[error("{path}: the file is empty (0 bytes)")]
    Empty { path: String },
    #[error("{path}: not an image this tool can read (unrecognised format)")]
    NotAnImage { path: String },
    #[error("{path}: the image is {width}x{height} ({mp:.0} megapixels), over the limit of {limit_mp:.0} megapixels; downscale it first or raise --max-pixels")]
    TooLarge {
        path: String,
        width: u32,
        height: u32,
        mp: f64,
        limit_mp: f64,
    },
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path} exists and is not a folder; choose another output folder")]
    NotAFolder { path: String },
    #[error("{path}: cannot encode: {reason}")]
    Encode { path: String, reason: String },
}

/// The default pixel limit of [`read_image`]: 100 megapixels (300 MB as RGB).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Read an image file as 8-bit RGB, refusing images over `max_pixels`.
pub fn read_image(path: &Path, max_pixels: u64) -> Result<RgbImage, IoError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IoError::Missing { path: p.clone() },
        _ => IoError::Io {
            path: p.clone(),
            err: e,
        },
    })?;
    if meta.is_dir() {
        return Err(IoError::NotAnImage { path: p });
    }
    if meta.len() == 0 {
        return Err(IoError::Empty { path: p });
    }
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })?;
        f.read(&mut head).map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })?
    };
    // Judge by content, not by the file name's extension.
    if image::guess_format(&head[..n]).is_err() {
        return Err(IoError::NotAnImage { path: p });
    }
    let open = || -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, IoError> {
        let r = image::ImageReader::open(path).map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })?;
        let r = r.with_guessed_format().map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })?;
        if r.format().is_none() {
            return Err(IoError::NotAnImage { path: p.clone() });
        }
        Ok(r)
    };
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => IoError::Corrupt {
            path: p.clone(),
            reason: format!("unsupported: {u}"),
        },
        image::ImageError::Limits(l) => IoError::Corrupt {
            path: p.clone(),
            reason: format!("decoder limit: {l}"),
        },
        other => IoError::Corrupt {
            path: p.clone(),
            reason: other.to_string(),
        },
    };
    let (w, h) = open()?.into_dimensions().map_err(corrupt)?;
    let pixels = w as u64 * h as u64;
    if pixels == 0 {
        return Err(IoError::Corrupt {
            path: p,
            reason: format!("{w}x{h} has no pixels"),
        });
    }
    if pixels > max_pixels {
        return Err(IoError::TooLarge {
            path: p,
            width: w,
            height: h,
            mp: pixels as f64 / 1e6,
            limit_mp: max_pixels as f64 / 1e6,
        });
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    // 16-bit RGBA is the widest decoded form: 8 bytes a pixel, plus headroom for the RGB copy.
    limits.max_alloc = Some(pixels * 8 + (64 << 20));
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    reader.limits(limits);
    let img = reader.decode().map_err(corrupt)?;
    let rgb = img.into_rgb8();
    RgbImage::new(w as usize, h as usize, rgb.into_raw()).map_err(|e| IoError::Corrupt {
        path: p,
        reason: e.to_string(),
    })
}

/// The PASCAL VOC colour map: colour of label `i` (0 black, 1 dark red, 2 green, …).
pub fn voc_color(i: usize) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = i;
    for j in 0..8 {
        r |= ((c & 1) as u8) << (7 - j);
        g |= (((c >> 1) & 1) as u8) << (7 - j);
        b |= (((c >> 2) & 1) as u8) << (7 - j);
        c >>= 3;
    }
    [r, g, b]
}

/// Create the folder `dir` and its parents, if missing.
pub fn create_dir(dir: &Path) -> Result<(), IoError> {
    if let Some(file) = dir.ancestors().find(|a| a.exists() && !a.is_dir()) {
        let path = file.display().to_string();
        return Err(IoError::NotAFolder { path });
    }
    let path = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|err| IoError::Io { path, err })
}

/// Write `bytes` produced by `fill` to `path` atomically (temporary file, then rename).
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), String>,
) -> Result<(), IoError> {
    let p = path.display().to_string();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir(dir)?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| IoError::Io {
            path: tmp.display().to_string(),
            err: e,
        })?;
        let mut w = BufWriter::new(f);
        fill(&mut w).map_err(|reason| IoError::Encode {
            path: p.clone(),
            reason,
        })?;
        let f = w.into_inner().map_err(|e| IoError::Io {
            path: p.clone(),
            err: e.into_error(),
        })?;
        f.sync_all().map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })?;
        std::fs::rename(&tmp, path).map_err(|e| IoError::Io {
            path: p.clone(),
            err: e,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The label map as an indexed PNG with the VOC palette (index = label), or 16-bit gray when
/// there are more than 256 labels.
pub fn write_label_png(path: &Path, seg: &Segmentation) -> Result<(), IoError> {
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, seg.width as u32, seg.height as u32);
        let data: Vec<u8> = if seg.channels <= 256 {
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette((0..256).flat_map(voc_color).collect::<Vec<u8>>());
            seg.labels.iter().map(|&l| l as u8).collect()
        } else {
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Sixteen);
            seg.labels.iter().flat_map(|l| l.to_be_bytes()).collect()
        };
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

/// An 8-bit label map as an indexed PNG with the VOC palette.
pub fn write_index_png(
    path: &Path,
    width: usize,
    height: usize,
    labels: &[u8],
) -> Result<(), IoError> {
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, width as u32, height as u32);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette((0..256).flat_map(voc_color).collect::<Vec<u8>>());
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(labels).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

/// An RGB image as PNG.
pub fn write_rgb_png(path: &Path, image: &RgbImage) -> Result<(), IoError> {
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, image.width as u32, image.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&image.data)
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

/// A label map as a 16-bit grayscale PNG (pixel value = label).
pub fn write_gray16_png(
    path: &Path,
    width: usize,
    height: usize,
    labels: &[u32],
) -> Result<(), IoError> {
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, width as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        let data: Vec<u8> = labels
            .iter()
            .flat_map(|&l| (l.min(65535) as u16).to_be_bytes())
            .collect();
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

/// The image with the boundaries between differently labelled pixels drawn in red.
pub fn write_boundary_png(path: &Path, image: &RgbImage, labels: &[u32]) -> Result<(), IoError> {
    let (w, h) = (image.width, image.height);
    let mut buf = image.data.clone();
    for y in 0..h {
        for x in 0..w {
            let l = labels[y * w + x];
            let edge = (x + 1 < w && labels[y * w + x + 1] != l)
                || (y + 1 < h && labels[(y + 1) * w + x] != l);
            if edge {
                buf[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 0, 0]);
            }
        }
    }
    write_atomic(path, |wr| {
        let mut enc = png::Encoder::new(wr, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&buf).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

fn draw_text(
    buf: &mut [u8],
    width: usize,
    x0: usize,
    y0: usize,
    text: &str,
    scale: usize,
    color: [u8; 3],
) {
    use font8x8::UnicodeFonts;
    let height = buf.len() / (width * 3);
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (x, y) = (x0 + (i * 8 + col) * scale + dx, y0 + row * scale + dy);
                            if x < width && y < height {
                                buf[(y * width + x) * 3..(y * width + x) * 3 + 3]
                                    .copy_from_slice(&color);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The image with the labels blended over it (50 %; background left as it is) and a legend below: one swatch, name and
/// pixel share per label present.
pub fn write_overlay_png(
    path: &Path,
    image: &RgbImage,
    seg: &Segmentation,
    names: &[String],
) -> Result<(), IoError> {
    let (w, h) = (image.width, image.height);
    let fractions = seg.fractions();
    let present: Vec<usize> = (0..seg.channels).filter(|&c| fractions[c] > 0.0).collect();
    let scale = if w >= 480 { 2 } else { 1 };
    let line = 10 * scale;
    let legend_h = (present.len() * line) + 2 * scale * 2;
    let total_h = h + legend_h;
    let out_w = w.max(8 * scale * 32);
    let mut buf = vec![255u8; out_w * total_h * 3];
    let background = names.first().is_some_and(|n| n == "background");
    for y in 0..h {
        for x in 0..w {
            let label = seg.labels[y * w + x] as usize;
            if background && label == 0 {
                buf[(y * out_w + x) * 3..(y * out_w + x) * 3 + 3]
                    .copy_from_slice(&image.data[(y * w + x) * 3..(y * w + x) * 3 + 3]);
                continue;
            }
            let c = voc_color(label);
            for k in 0..3 {
                let v = image.data[(y * w + x) * 3 + k] as u16;
                buf[(y * out_w + x) * 3 + k] = ((v + c[k] as u16) / 2) as u8;
            }
        }
    }
    for (i, &c) in present.iter().enumerate() {
        let y = h + 2 * scale + i * line;
        let col = voc_color(c);
        for yy in y..(y + 8 * scale).min(total_h) {
            for xx in 2 * scale..10 * scale {
                buf[(yy * out_w + xx) * 3..(yy * out_w + xx) * 3 + 3].copy_from_slice(&col);
            }
        }
        let name = names.get(c).map(String::as_str).unwrap_or("?");
        draw_text(
            &mut buf,
            out_w,
            12 * scale,
            y,
            &format!("{c:>2} {name} {:.1}%", fractions[c] * 100.0),
            scale,
            [0, 0, 0],
        );
    }
    write_atomic(path, |wr| {
        let mut enc = png::Encoder::new(wr, out_w as u32, total_h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&buf).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_palette_first_colours() {
        assert_eq!(voc_color(0), [0, 0, 0]);
        assert_eq!(voc_color(1), [128, 0, 0]);
        assert_eq!(voc_color(2), [0, 128, 0]);
        assert_eq!(voc_color(15), [192, 128, 128]);
        assert_eq!(voc_color(255), [224, 224, 192]);
    }
}
