//! Caption datasets and the superpixel cache on tiny datasets the test builds itself: tar shards,
//! TSV, Karpathy JSON, JSONL, with corrupt and missing images.

use std::path::{Path, PathBuf};

use segclip_data::datasets::{CaptionDataset, SuperpixelCache};
use segclip_data::superpixels::{FelzenszwalbParams, Method};

fn dir(name: &str) -> PathBuf {
    // Under target/tmp (cargo's folder for integration tests), emptied at each run.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("segclip-ds-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn png_bytes(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([x as u8 * 20 + seed, y as u8 * 25, seed])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn add(builder: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append_data(&mut h, name, data).unwrap();
}

#[test]
fn webdataset_shards_skip_corrupt_images() {
    let d = dir("wds");
    for shard in 0..2 {
        let f = std::fs::File::create(d.join(format!("{shard:05}.tar"))).unwrap();
        let mut b = tar::Builder::new(f);
        for k in 0..3 {
            let key = format!("{shard}{k:03}");
            let img = if shard == 1 && k == 2 {
                b"not a jpeg".to_vec()
            } else {
                png_bytes(k)
            };
            add(&mut b, &format!("{key}.jpg"), &img);
            add(
                &mut b,
                &format!("{key}.txt"),
                format!("caption {key}").as_bytes(),
            );
            add(&mut b, &format!("{key}.json"), b"{}");
        }
        // An image without a caption is not a sample.
        add(&mut b, "orphan.jpg", &png_bytes(9));
        b.finish().unwrap();
    }
    let ds = CaptionDataset::webdataset_dir(&d).unwrap();
    assert_eq!(ds.len(), 6);
    assert_eq!(ds.records[0].caption, "caption 0000");
    let all: Vec<usize> = (0..ds.len()).collect();
    let (samples, skipped) = ds.load_batch(&all);
    assert_eq!((samples.len(), skipped), (5, 1));
    assert_eq!((samples[0].image.width, samples[0].image.height), (12, 9));
    // Seeded shuffling: same seed and epoch, same order; another epoch, another order.
    assert_eq!(ds.epoch_order(3, 0), ds.epoch_order(3, 0));
    assert_ne!(ds.epoch_order(3, 0), ds.epoch_order(3, 1));
    let mut sorted = ds.epoch_order(3, 5);
    sorted.sort();
    assert_eq!(sorted, all);
    assert_eq!(ds.clone().limit(4).len(), 4);
    let err = CaptionDataset::webdataset_dir(&dir("empty"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(".tar"), "{err}");
}

fn write_images(root: &Path, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let p = root.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, png_bytes(i as u8)).unwrap();
    }
}

#[test]
fn tsv_karpathy_and_jsonl() {
    let d = dir("files");
    write_images(&d, &["a.png", "train2014/x.jpg", "val2014/y.jpg"]);
    std::fs::write(d.join("c.tsv"), "a cat\ta.png\na missing dog\tnope.png\n").unwrap();
    let ds = CaptionDataset::tsv(&d.join("c.tsv"), &d).unwrap();
    let (s, skipped) = ds.load_batch(&[0, 1]);
    assert_eq!((s.len(), skipped), (1, 1));
    let karpathy = serde_json::json!({"images": [
        {"filepath": "train2014", "filename": "x.jpg", "split": "train", "sentences": [{"raw": "one"}, {"raw": "two "}]},
        {"filepath": "val2014", "filename": "y.jpg", "split": "restval", "sentences": [{"raw": "three"}]}
    ]});
    std::fs::write(d.join("dataset_coco.json"), karpathy.to_string()).unwrap();
    let ds = CaptionDataset::coco_karpathy(&d.join("dataset_coco.json"), &d, "train").unwrap();
    assert_eq!(
        ds.records
            .iter()
            .map(|r| r.caption.as_str())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(
        ds.records[0].key, ds.records[1].key,
        "one image, one sample per caption"
    );
    std::fs::write(
        d.join("pairs.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"hello\"}\n\n{\"image\": \"a.png\"}\n",
    )
    .unwrap();
    let err = CaptionDataset::jsonl(&d.join("pairs.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    std::fs::write(
        d.join("pairs.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"hello\"}\n",
    )
    .unwrap();
    let ds = CaptionDataset::jsonl(&d.join("pairs.jsonl")).unwrap();
    assert_eq!(ds.load_batch(&[0]).0[0].caption, "hello");
}

#[test]
fn superpixel_cache_is_keyed_by_parameters() {
    let d = dir("cache");
    let img = image::load_from_memory(&png_bytes(3)).unwrap().into_rgb8();
    let (h, w) = (img.height() as usize, img.width() as usize);
    let a = SuperpixelCache::new(
        &d,
        Method::Felzenszwalb(FelzenszwalbParams {
            scale: 100.0,
            sigma: 0.5,
            min_size: 5,
        }),
    );
    let b = SuperpixelCache::new(
        &d,
        Method::Felzenszwalb(FelzenszwalbParams {
            scale: 100.0,
            sigma: 0.5,
            min_size: 50,
        }),
    );
    assert_ne!(a.dir(), b.dir());
    let first = a.get("shard/0001", img.as_raw(), (h, w)).unwrap();
    let files: Vec<_> = std::fs::read_dir(a.dir()).unwrap().collect();
    assert_eq!(files.len(), 1);
    // A second call reads the file (same map), even for a different image under the same key.
    let other = vec![0u8; img.as_raw().len()];
    assert_eq!(a.get("shard/0001", &other, (h, w)).unwrap(), first);
    // Other parameters never see it.
    assert!(!b.dir().exists());
    // A cached map of the wrong size is recomputed.
    let small = vec![0u8; 2 * 2 * 3];
    assert_eq!(a.get("shard/0001", &small, (2, 2)).unwrap().labels.len(), 4);
}

/// A parquet table of (key, caption, status) rows, as img2dataset writes beside its image folders.
fn write_parquet(path: &Path, rows: &[(&str, &str, &str)]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message schema { REQUIRED BYTE_ARRAY key (UTF8); REQUIRED BYTE_ARRAY caption (UTF8); REQUIRED BYTE_ARRAY status (UTF8); }",
    )
    .unwrap();
    let props = std::sync::Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, std::sync::Arc::new(schema), props).unwrap();
    let mut group = w.next_row_group().unwrap();
    for col in 0..3 {
        let values: Vec<ByteArray> = rows
            .iter()
            .map(|r| ByteArray::from([r.0, r.1, r.2][col]))
            .collect();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        c.close().unwrap();
    }
    group.close().unwrap();
    w.close().unwrap();
}

#[test]
fn img2dataset_parquet_and_image_folders() {
    let d = dir("parquet");
    write_images(
        &d,
        &[
            "00000/000000000.jpg",
            "00000/000000002.png",
            "00001/000010000.jpg",
        ],
    );
    write_parquet(
        &d.join("00000.parquet"),
        &[
            ("000000000", "a red bus", "success"),
            ("000000001", "never downloaded", "failed_to_download"),
            ("000000002", "a png image", "success"),
            ("000000003", "listed but the file is gone", "success"),
        ],
    );
    write_parquet(
        &d.join("00001.parquet"),
        &[("000010000", "second shard", "success")],
    );
    let ds = CaptionDataset::parquet_dir(&d).unwrap();
    let captions: Vec<&str> = ds.records.iter().map(|r| r.caption.as_str()).collect();
    assert_eq!(
        captions,
        [
            "a red bus",
            "a png image",
            "listed but the file is gone",
            "second shard"
        ],
        "failed downloads are left out"
    );
    let (samples, skipped) = ds.load_batch(&[0, 1, 2, 3]);
    assert_eq!(
        (samples.len(), skipped),
        (3, 1),
        "a missing image is skipped and counted"
    );
    assert_eq!(samples[1].image.width, 12);
    // A folder without tables, and a table that is not parquet, are named.
    let empty = dir("parquet-empty");
    let e = CaptionDataset::parquet_dir(&empty).unwrap_err().to_string();
    assert!(e.contains(".parquet"), "{e}");
    std::fs::write(empty.join("00000.parquet"), b"not parquet").unwrap();
    let e = CaptionDataset::parquet_dir(&empty).unwrap_err().to_string();
    assert!(
        e.contains("00000.parquet") && e.contains("parquet table"),
        "{e}"
    );
}
