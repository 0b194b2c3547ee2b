//! MAE random masking (spec section 1.8) and the patch layout of the reconstruction target
//! (spec section 2.2).

use candle_core::{Result, Tensor};

/// The masking of one sample over `1 + N` tokens (CLS first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masking {
    /// Token indices kept, CLS (0) first, then patches in increasing-noise order.
    pub ids_keep: Vec<usize>,
    /// `argsort(ids_shuffle)`: where each token went.
    pub ids_restore: Vec<usize>,
    /// 1 = removed, 0 = kept, in token order (CLS is 0).
    pub mask: Vec<u8>,
}

/// Mask tokens by `noise` (one value per token, CLS included; the CLS value is replaced by −1 so
/// CLS is always kept), keeping `len_keep` tokens (`int(197 · 0.25) = 49` officially).
pub fn random_masking(noise: &[f32], len_keep: usize) -> Masking {
    let mut noise = noise.to_vec();
    if let Some(cls) = noise.first_mut() {
        *cls = -1.0;
    }
    let mut shuffle: Vec<usize> = (0..noise.len()).collect();
    shuffle.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]).then(a.cmp(&b)));
    let mut restore = vec![0usize; noise.len()];
    for (pos, &tok) in shuffle.iter().enumerate() {
        restore[tok] = pos;
    }
    let len_keep = len_keep.min(noise.len());
    let mask = restore.iter().map(|&pos| (pos >= len_keep) as u8).collect();
    Masking {
        ids_keep: shuffle[..len_keep].to_vec(),
        ids_restore: restore,
        mask,
    }
}

/// (B, 3, H, W) → (B, (H/p)·(W/p), p·p·3), each patch in (row, column, channel) order.
pub use segclip_vit::vision::patchify_pqc as patchify;

/// The inverse of [`patchify`] for a (gh, gw) grid of p-pixel patches with `c` channels.
pub fn unpatchify(x: &Tensor, p: usize, (gh, gw): (usize, usize), c: usize) -> Result<Tensor> {
    let b = x.dim(0)?;
    x.reshape((b, gh, gw, p, p, c))?
        .permute((0, 5, 1, 3, 2, 4))?
        .contiguous()?
        .reshape((b, c, gh * p, gw * p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn masking_keeps_cls_and_the_lowest_noise() {
        let m = random_masking(&[0.9, 0.5, 0.1, 0.7, 0.3], 3);
        assert_eq!(m.ids_keep, vec![0, 2, 4]);
        assert_eq!(m.mask, vec![0, 1, 0, 1, 0]);
        // ids_shuffle = [0, 2, 4, 1, 3] -> restore = [0, 3, 1, 4, 2]
        assert_eq!(m.ids_restore, vec![0, 3, 1, 4, 2]);
    }

    #[test]
    fn patch_layout_is_row_column_channel() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 3. * 4. * 4., &dev)
            .unwrap()
            .reshape((2, 3, 4, 4))
            .unwrap();
        let p = patchify(&x, 2).unwrap();
        assert_eq!(p.dims(), &[2, 4, 12]);
        // Patch (0, 1) of sample 0 starts at pixel (row 0, col 2): channels 0, 1, 2 of it come first.
        let v = p.get(0).unwrap().get(1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&v[..6], &[2., 18., 34., 3., 19., 35.]);
        let back = unpatchify(&p, 2, (2, 2), 3).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
