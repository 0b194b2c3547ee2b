//! Synthetic captioned scenes with pixel ground truth: the benchmark on which we check that
//! SegCLIP learns open-vocabulary segmentation from captions alone (no pixel labels are used in
//! training). See `datasets/synth/README.md`.
//!
//! A scene has 1–3 objects, each a (colour, shape) pair drawn at a random size, position and
//! rotation over a textured or noisy background; later objects occlude earlier ones. The caption
//! names some or all objects through varied templates and synonyms. The label map gives every
//! pixel its (colour, shape) class (0 = background). Some combinations are held out: they never
//! appear in training scenes or captions, and evaluating on them tests generalisation to new
//! compositions. Everything is a pure function of (seed, index).

use segclip_group::zeroshot::RgbImage;

use crate::transforms::Rng;

/// Colours: name, RGB, caption synonyms.
pub const COLOURS: [(&str, [u8; 3], &[&str]); 5] = [
    ("red", [220, 40, 40], &["red", "crimson"]),
    ("green", [40, 180, 60], &["green"]),
    ("blue", [40, 70, 220], &["blue", "navy"]),
    ("yellow", [235, 215, 40], &["yellow", "golden"]),
    ("purple", [150, 50, 190], &["purple", "violet"]),
];

/// Shapes: name, caption synonyms.
pub const SHAPES: [(&str, &[&str]); 4] = [
    ("circle", &["circle", "disk", "round shape"]),
    ("square", &["square", "box"]),
    ("triangle", &["triangle"]),
    ("ring", &["ring", "hoop"]),
];

/// Colours that only the CLIP pretraining splits draw: a wider world than the benchmark's, as
/// OpenAI's CLIP saw far more colours than any segmentation benchmark names. They follow
/// [`COLOURS`] in colour indices (5, 6, …); [`Split::Pretrain`] draws the first six,
/// [`Split::PretrainWide`] all of them.
pub const EXTRA_COLOURS: [(&str, [u8; 3], &[&str]); 16] = [
    ("orange", [240, 135, 30], &["orange"]),
    ("cyan", [40, 205, 205], &["cyan", "turquoise"]),
    ("pink", [245, 140, 190], &["pink"]),
    ("white", [240, 240, 240], &["white"]),
    ("black", [25, 25, 25], &["black"]),
    ("brown", [125, 75, 30], &["brown"]),
    ("teal", [0, 128, 128], &["teal"]),
    ("lime", [150, 235, 30], &["lime"]),
    ("magenta", [230, 30, 200], &["magenta"]),
    ("maroon", [120, 15, 60], &["maroon"]),
    ("olive", [130, 140, 20], &["olive"]),
    ("beige", [225, 205, 160], &["beige"]),
    ("lavender", [180, 160, 245], &["lavender"]),
    ("mint", [160, 245, 195], &["mint"]),
    ("salmon", [250, 120, 105], &["salmon"]),
    ("indigo", [70, 20, 140], &["indigo"]),
];

/// Name, RGB and synonyms of colour index `c` ([`COLOURS`], then [`EXTRA_COLOURS`]).
fn colour(c: usize) -> (&'static str, [u8; 3], &'static [&'static str]) {
    if c < COLOURS.len() {
        COLOURS[c]
    } else {
        EXTRA_COLOURS[c - COLOURS.len()]
    }
}

/// (colour, shape) combinations never shown in training.
pub const HELD_OUT: [(usize, usize); 4] = [(0, 2), (2, 3), (3, 0), (4, 1)];

/// Which scenes to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Held-out combinations never appear.
    Train,
    /// Any combination, held-out ones included.
    Test,
    /// For pretraining the benchmark's CLIP (`benches/pretrain_synth_clip.py`): as `Train`
    /// (held-out combinations never appear), with objects also in the first six
    /// [`EXTRA_COLOURS`], whose label ids continue past the benchmark's classes
    /// (`class_id(5, 0)` = 21, …).
    Pretrain,
    /// As `Pretrain`, with objects in all sixteen [`EXTRA_COLOURS`]: every shape in 21 colours.
    PretrainWide,
}

impl Split {
    /// How many colours the split draws: the first this many of [`COLOURS`] then
    /// [`EXTRA_COLOURS`].
    pub fn colours(self) -> usize {
        match self {
            Split::Train | Split::Test => COLOURS.len(),
            Split::Pretrain => COLOURS.len() + 6,
            Split::PretrainWide => COLOURS.len() + EXTRA_COLOURS.len(),
        }
    }
}

/// One scene.
#[derive(Debug, Clone)]
pub struct Scene {
    pub image: RgbImage,
    /// Class per pixel: 0 background, 1 + colour·|shapes| + shape otherwise.
    pub labels: Vec<u8>,
    pub caption: String,
    pub objects: Vec<(usize, usize)>,
}

/// Class names, background first: "red circle", "red square", …
pub fn class_names() -> Vec<String> {
    class_names_of(Split::Train)
}

/// The label names a split's scenes use: [`class_names`], and for the pretraining splits the
/// combinations of their [`EXTRA_COLOURS`] after them.
pub fn class_names_of(split: Split) -> Vec<String> {
    let mut v = vec!["background".to_string()];
    for c in 0..split.colours() {
        for (s, _) in SHAPES {
            v.push(format!("{} {s}", colour(c).0));
        }
    }
    v
}

/// The class id of a combination.
pub fn class_id(colour: usize, shape: usize) -> u8 {
    (1 + colour * SHAPES.len() + shape) as u8
}

/// Whether class `id` is a held-out combination.
pub fn is_held_out(id: usize) -> bool {
    id > 0 && HELD_OUT.contains(&((id - 1) / SHAPES.len(), (id - 1) % SHAPES.len()))
}

fn inside(shape: usize, dx: f64, dy: f64, r: f64, angle: f64) -> bool {
    let (s, c) = angle.sin_cos();
    let (x, y) = (dx * c + dy * s, -dx * s + dy * c);
    match shape {
        0 => x * x + y * y <= r * r,
        1 => x.abs() <= r * 0.85 && y.abs() <= r * 0.85,
        2 => {
            // Equilateral triangle pointing up, circumradius r.
            let h = r * 1.5;
            let yy = y + r * 0.5;
            yy <= h && yy >= 0.0 && x.abs() <= (h - yy) / 3f64.sqrt()
        }
        _ => {
            let d = (x * x + y * y).sqrt();
            d <= r && d >= r * 0.55
        }
    }
}

fn pick<'a>(rng: &mut Rng, v: &[&'a str]) -> &'a str {
    v[rng.below(0, v.len())]
}

/// Scene `index` of the stream `seed` at `size`×`size` pixels.
pub fn scene(seed: u64, index: u64, size: usize, split: Split) -> Scene {
    let mut rng = Rng::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    // Background: a muted base colour with noise, and sometimes stripes.
    let base = [
        rng.below(60, 170) as f64,
        rng.below(60, 170) as f64,
        rng.below(60, 170) as f64,
    ];
    let stripes = rng.below(0, 3) == 0;
    let period = rng.uniform(6.0, 18.0);
    let mut data = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let s =
                if stripes && (((x as f64 + y as f64 * 0.5) / period) as usize).is_multiple_of(2) {
                    18.0
                } else {
                    0.0
                };
            for c in 0..3 {
                let v = base[c] + s + rng.uniform(-14.0, 14.0);
                data[(y * size + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    let mut labels = vec![0u8; size * size];
    let n = rng.below(1, 4);
    let mut objects: Vec<(usize, usize)> = Vec::new();
    let colours = split.colours();
    while objects.len() < n {
        let (c, s) = (rng.below(0, colours), rng.below(0, SHAPES.len()));
        if (split != Split::Test && HELD_OUT.contains(&(c, s))) || objects.contains(&(c, s)) {
            continue;
        }
        objects.push((c, s));
    }
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    for &(c, s) in &objects {
        // Partial occlusion at most: retry positions that would hide most of an earlier object.
        let (mut r, mut cx, mut cy) = (0.0, 0.0, 0.0);
        for _ in 0..30 {
            r = rng.uniform(0.14, 0.28) * size as f64;
            cx = rng.uniform(r * 0.6, size as f64 - r * 0.6);
            cy = rng.uniform(r * 0.6, size as f64 - r * 0.6);
            if placed.iter().all(|&(px, py, pr)| {
                ((px - cx).powi(2) + (py - cy).powi(2)).sqrt() > 0.8 * (pr + r)
            }) {
                break;
            }
        }
        placed.push((cx, cy, r));
        let angle = rng.uniform(0.0, std::f64::consts::PI);
        let shade = rng.uniform(-20.0, 20.0);
        let col = colour(c).1;
        for y in 0..size {
            for x in 0..size {
                if inside(s, x as f64 + 0.5 - cx, y as f64 + 0.5 - cy, r, angle) {
                    for k in 0..3 {
                        data[(y * size + x) * 3 + k] =
                            (col[k] as f64 + shade + rng.uniform(-6.0, 6.0)).clamp(0.0, 255.0)
                                as u8;
                    }
                    labels[y * size + x] = class_id(c, s);
                }
            }
        }
    }
    // Caption: all objects, or (sometimes) only some of them.
    let mut named: Vec<(usize, usize)> = objects.clone();
    if named.len() > 1 && rng.below(0, 4) == 0 {
        named.truncate(rng.below(1, named.len()));
    }
    let phrase = |rng: &mut Rng, (c, s): (usize, usize)| {
        format!("{} {}", pick(rng, colour(c).2), pick(rng, SHAPES[s].1))
    };
    let parts: Vec<String> = named.iter().map(|&o| phrase(&mut rng, o)).collect();
    let list = match parts.len() {
        1 => format!("a {}", parts[0]),
        2 => format!("a {} and a {}", parts[0], parts[1]),
        _ => format!("a {}, a {} and a {}", parts[0], parts[1], parts[2]),
    };
    let caption = match rng.below(0, 4) {
        0 => list,
        1 => format!("a picture of {list}"),
        2 => format!("{list} on a patterned background"),
        _ => format!("there is {list}"),
    };
    Scene {
        image: RgbImage {
            width: size,
            height: size,
            data,
        },
        labels,
        caption,
        objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_respect_the_split() {
        let a = scene(1, 5, 64, Split::Train);
        let b = scene(1, 5, 64, Split::Train);
        assert_eq!(a.image.data, b.image.data);
        assert_eq!(a.caption, b.caption);
        for i in 0..200 {
            let s = scene(3, i, 48, Split::Train);
            assert!(s.objects.iter().all(|o| !HELD_OUT.contains(o)));
            assert!(s.labels.iter().all(|&l| !is_held_out(l as usize)));
            assert!(!s.caption.is_empty());
        }
        let names = class_names();
        assert_eq!(names.len(), 21);
        assert_eq!(names[class_id(0, 2) as usize], "red triangle");
        assert!(is_held_out(class_id(0, 2) as usize) && !is_held_out(class_id(0, 0) as usize));
        // The pretraining split adds colours, never the held-out combinations; its first five
        // colours are the benchmark's.
        let pre: Vec<Scene> = (0..300).map(|i| scene(3, i, 48, Split::Pretrain)).collect();
        assert!(pre
            .iter()
            .all(|s| s.objects.iter().all(|o| !HELD_OUT.contains(o))));
        assert!(pre
            .iter()
            .any(|s| s.objects.iter().any(|o| o.0 >= COLOURS.len())));
        assert!(pre.iter().any(|s| s.caption.contains("orange")));
        // Their label maps index the pretraining split's names.
        let pre_names = class_names_of(Split::Pretrain);
        assert_eq!(pre_names.len(), 1 + 11 * 4);
        assert_eq!(pre_names[..21], names[..]);
        assert_eq!(pre_names[class_id(5, 3) as usize], "orange ring");
        assert!(pre
            .iter()
            .all(|s| s.labels.iter().all(|&l| (l as usize) < pre_names.len())));
        // The wide pretraining split draws every extra colour, the held-out combinations never.
        let wide: Vec<Scene> = (0..600)
            .map(|i| scene(3, i, 48, Split::PretrainWide))
            .collect();
        assert!(wide
            .iter()
            .all(|s| s.objects.iter().all(|o| !HELD_OUT.contains(o))));
        for c in 0..Split::PretrainWide.colours() {
            assert!(wide.iter().any(|s| s.objects.iter().any(|o| o.0 == c)));
        }
        assert_eq!(class_names_of(Split::PretrainWide).len(), 1 + 21 * 4);
        assert!(pre.iter().all(|s| s.objects.iter().all(|o| o.0 < 11)));
        // Test scenes do contain held-out combinations.
        assert!((0..200).any(|i| scene(9, i, 48, Split::Test)
            .objects
            .iter()
            .any(|o| HELD_OUT.contains(o))));
    }
}
