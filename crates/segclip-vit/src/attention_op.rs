//! Scaled dot-product attention as one autograd node on CPU f32: the forward keeps no score
//! matrix, and the gradient recomputes each (batch, head)'s probabilities instead of reading
//! stored ones (as FlashAttention does), so training holds neither the scores nor their softmax.
//!
//! ```text
//! S = s·Q Kᵀ + M,  P = softmax_rows(S),  O = P V
//! dV = Pᵀ dO
//! dP = dO Vᵀ
//! dS = P ⊙ (dP − rowsum(dP ⊙ P))
//! dQ = s·dS K,  dK = s·dSᵀ Q
//! ```
//!
//! Two forms: [`AttentionOp`] on q, k, v already split into heads (cross-attention), and
//! [`PackedAttentionOp`] on self-attention's packed projection `[q | k | v]` (B, N, 3C), which
//! reads each head's rows in place and writes the heads side by side (B, N, C), and whose
//! gradient is again one (B, N, 3C) tensor: no head split or merge, hence no copy, reshape or
//! narrow node and none of their gradient tensors.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::block::{one_head, Rows};
use crate::cpu::SendPtr;

/// `softmax(s·q kᵀ + mask) v` over q (B, H, Nq, d), k and v (B, H, Nk, d), all contiguous.
pub(crate) struct AttentionOp {
    pub scale: f32,
    /// Additive (Nq, Nk) mask, row-major.
    pub mask: Option<Vec<f32>>,
}

/// `dst` (m × n, rows `dst_rs` apart) = `beta · lhs · rhs`, with lhs element (i, p) at
/// `i·lhs.0 + p·lhs.1` and rhs element (p, j) at `p·rhs.0 + j·rhs.1`.
///
/// # Safety
/// The pointers must address every element those strides reach, `dst` writable and unaliased.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// One (batch, head)'s gradient, the formulas at the top of this file: P recomputed from q and
/// k, then `dV = Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − rowsum(dO Vᵀ ⊙ P))`, `dQ = s·dS K`,
/// `dK = s·dSᵀ Q`, each written in full into its rows.
///
/// # Safety
/// q and g must address nq rows, k and v nk rows, of `d` readable values each; dq nq rows and
/// dk, dv nk rows of `d` writable values at their strides, written by no one else meanwhile.
unsafe fn head_backward(
    [q, k, v, g]: [Rows; 4],
    [(dq, dq_rs), (dk, dk_rs), (dv, dv_rs)]: [(*mut f32, usize); 3],
    (nq, nk, d): (usize, usize, usize),
    s: f32,
    mask: Option<&[f32]>,
) {
    let mut p = vec![0f32; nq * nk];
    let mut dp = vec![0f32; nq * nk];
    // SAFETY (every `mm`): the caller's rows, and p, dp as (nq, nk) row-major buffers.
    unsafe {
        mm(
            (nq, nk, d),
            (p.as_mut_ptr(), nk),
            q.ptr,
            (q.stride, 1),
            k.ptr,
            (1, k.stride),
            s,
        );
    }
    for (r, row) in p.chunks_mut(nk).enumerate() {
        if let Some(m) = mask {
            row.iter_mut().zip(&m[r * nk..]).for_each(|(x, a)| *x += a);
        }
        crate::fastmath::softmax_row(row);
    }
    unsafe {
        mm(
            (nk, d, nq),
            (dv, dv_rs),
            p.as_ptr(),
            (1, nk),
            g.ptr,
            (g.stride, 1),
            1.0,
        );
        mm(
            (nq, nk, d),
            (dp.as_mut_ptr(), nk),
            g.ptr,
            (g.stride, 1),
            v.ptr,
            (1, v.stride),
            1.0,
        );
    }
    for (dp, p) in dp.chunks_mut(nk).zip(p.chunks(nk)) {
        let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
        dp.iter_mut().zip(p).for_each(|(x, &p)| *x = p * (*x - dot));
    }
    // dp now holds dS.
    unsafe {
        mm(
            (nq, d, nk),
            (dq, dq_rs),
            dp.as_ptr(),
            (nk, 1),
            k.ptr,
            (k.stride, 1),
            s,
        );
        mm(
            (nk, d, nq),
            (dk, dk_rs),
            dp.as_ptr(),
            (1, nk),
            q.ptr,
            (q.stride, 1),
            s,
        );
    }
}

impl AttentionOp {
    /// (B·H, Nq, Nk, d) from the layouts of q and k.
    fn dims(&self, q: &Layout, k: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
        let (qd, kd) = (q.dims(), k.dims());
        if qd.len() != 4 || kd.len() != 4 || qd[..2] != kd[..2] || qd[3] != kd[3] {
            candle_core::bail!("attention: q {qd:?} and k {kd:?} do not match");
        }
        if let Some(m) = &self.mask {
            if m.len() != qd[2] * kd[2] {
                candle_core::bail!(
                    "attention: mask of {} for {}×{} scores",
                    m.len(),
                    qd[2],
                    kd[2]
                );
            }
        }
        Ok((qd[0] * qd[1], qd[2], kd[2], qd[3]))
    }
}

impl candle_core::CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (bh, nq, nk, d) = self.dims(l1, l2)?;
        let q = crate::cpu::slice(s1, l1, "attention")?;
        let k = crate::cpu::slice(s2, l2, "attention")?;
        let v = crate::cpu::slice(s3, l3, "attention")?;
        if v.len() != bh * nk * d {
            candle_core::bail!("attention: v {:?} does not match k", l3.dims());
        }
        let mut out = vec![0f32; bh * nq * d];
        out.par_chunks_mut(nq * d).enumerate().for_each(|(i, o)| {
            let rows = |x: &[f32], n: usize| Rows {
                ptr: x[i * n * d..].as_ptr(),
                stride: d,
            };
            // SAFETY: q_i (nq, d), k_i and v_i (nk, d) and o (nq, d) are live row-major buffers.
            unsafe {
                one_head(
                    rows(q, nq),
                    rows(k, nk),
                    rows(v, nk),
                    o.as_mut_ptr(),
                    d,
                    (nq, nk, d),
                    self.scale,
                    self.mask.as_deref(),
                )
            };
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let (bh, nq, nk, d) = self.dims(q.layout(), k.layout())?;
        let s = self.scale;
        let (dq, dk, dv) = crate::cpu::with_f32(q, |q| {
            crate::cpu::with_f32(k, |k| {
                crate::cpu::with_f32(v, |v| {
                    crate::cpu::with_f32(grad, |g| {
                        let mut dq = vec![0f32; bh * nq * d];
                        let mut dk = vec![0f32; bh * nk * d];
                        let mut dv = vec![0f32; bh * nk * d];
                        dq.par_chunks_mut(nq * d)
                            .zip(dk.par_chunks_mut(nk * d).zip(dv.par_chunks_mut(nk * d)))
                            .enumerate()
                            .for_each(|(i, (dq, (dk, dv)))| {
                                let rows = |x: &[f32], n: usize| Rows {
                                    ptr: x[i * n * d..].as_ptr(),
                                    stride: d,
                                };
                                // SAFETY: this (batch, head)'s q and g (nq, d), k and v
                                // (nk, d) are live row-major buffers; dq, dk, dv its own
                                // chunks.
                                unsafe {
                                    head_backward(
                                        [rows(q, nq), rows(k, nk), rows(v, nk), rows(g, nq)],
                                        [
                                            (dq.as_mut_ptr(), d),
                                            (dk.as_mut_ptr(), d),
                                            (dv.as_mut_ptr(), d),
                                        ],
                                        (nq, nk, d),
                                        s,
                                        self.mask.as_deref(),
                                    )
                                };
                            });
                        (dq, dk, dv)
                    })
                })
            })
        })????;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// Multi-head self-attention over the packed projection `[q | k | v]` (B, N, 3C), contiguous,
/// to the heads side by side (B, N, C).
pub(crate) struct PackedAttentionOp {
    heads: usize,
    d: usize,
    scale: f32,
    /// Additive (N, N) mask, row-major.
    mask: Option<Vec<f32>>,
}

impl PackedAttentionOp {
    /// `heads` of width `d` over `n` tokens; `mask` broadcastable to (N, N).
    pub fn new(
        heads: usize,
        d: usize,
        n: usize,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Self> {
        let mask = mask
            .map(|m| {
                m.broadcast_as((n, n))?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .transpose()?;
        Ok(Self {
            heads,
            d,
            scale: 1.0 / (d as f32).sqrt(),
            mask,
        })
    }

    /// (B, N, C) from the packed layout.
    fn dims(&self, l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
        let c = self.heads * self.d;
        match *l.dims() {
            [b, n, c3] if c3 == 3 * c && self.mask.as_ref().is_none_or(|m| m.len() == n * n) => {
                Ok((b, n, c))
            }
            ref dims => candle_core::bail!(
                "packed attention: {dims:?} is not (B, N, 3·{c}) with a mask of N² entries"
            ),
        }
    }
}

impl candle_core::CustomOp1 for PackedAttentionOp {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (b, n, c) = self.dims(l)?;
        let (heads, d, c3) = (self.heads, self.d, 3 * c);
        let src = crate::cpu::slice(s, l, "packed attention")?;
        let fill = |dst: *mut f32| {
            let dst = SendPtr(dst);
            (0..b * heads).into_par_iter().for_each(|task| {
                // Capture the whole `SendPtr` (a closure would otherwise capture its non-Send
                // field).
                #[allow(clippy::redundant_locals)]
                let dst = dst;
                let (bi, h) = (task / heads, task % heads);
                let at = |offset: usize| Rows {
                    ptr: src[bi * n * c3 + h * d + offset..].as_ptr(),
                    stride: c3,
                };
                // SAFETY: q/k/v rows are d-wide slices at stride 3C inside `src`; the output
                // rows of this (batch, head) are d-wide at stride C, disjoint from every other
                // task's.
                unsafe {
                    one_head(
                        at(0),
                        at(c),
                        at(2 * c),
                        dst.0.add(bi * n * c + h * d),
                        c,
                        (n, n, d),
                        self.scale,
                        self.mask.as_deref(),
                    )
                };
            });
        };
        // SAFETY: the (batch, head) tasks write every row's d columns of their head (one_head's
        // second GEMM never reads its destination): all b·n·c outputs.
        let out = unsafe { crate::cpu::written_by(b * n * c, fill) };
        Ok((CpuStorage::F32(out), (b, n, c).into()))
    }

    fn bwd(
        &self,
        packed: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        use rayon::prelude::*;
        let (b, n, c) = self.dims(packed.layout())?;
        let (heads, d, c3, s) = (self.heads, self.d, 3 * c, self.scale);
        let dpacked = crate::cpu::with_f32(packed, |x| {
            crate::cpu::with_f32(grad, |g| {
                let fill = |dx: *mut f32| {
                    let dst = SendPtr(dx);
                    (0..b * heads).into_par_iter().for_each(|task| {
                        #[allow(clippy::redundant_locals)]
                        let dst = dst;
                        let (bi, h) = (task / heads, task % heads);
                        let at = bi * n * c3 + h * d;
                        let rows = |ptr: &[f32], stride| Rows {
                            ptr: ptr.as_ptr(),
                            stride,
                        };
                        let (q, k, v) = (&x[at..], &x[at + c..], &x[at + 2 * c..]);
                        let g = &g[bi * n * c + h * d..];
                        // SAFETY: q, k, v are n rows of d at stride 3C inside `x`, g n rows of
                        // d at stride C inside the gradient; the dq/dk/dv rows are this
                        // (batch, head)'s d-wide blocks at stride 3C of `dx`, disjoint from
                        // every other task's.
                        unsafe {
                            head_backward(
                                [rows(q, c3), rows(k, c3), rows(v, c3), rows(g, c)],
                                [
                                    (dst.0.add(at), c3),
                                    (dst.0.add(at + c), c3),
                                    (dst.0.add(at + 2 * c), c3),
                                ],
                                (n, n, d),
                                s,
                                self.mask.as_deref(),
                            )
                        };
                    });
                };
                // SAFETY: the heads' dq, dk and dv blocks cover every element of dx, each
                // written in full by its GEMM.
                unsafe { crate::cpu::written_by(b * n * c3, fill) }
            })
        })??;
        Ok(Some(Tensor::from_vec(
            dpacked,
            packed.shape(),
            packed.device(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Output and the gradients of q, k, v match the composite of candle ops, with and without
    /// a causal mask (whose −∞ entries must give exactly zero probability).
    #[test]
    fn matches_the_composite_with_gradient() {
        let dev = Device::Cpu;
        let (b, h, d) = (2, 3, 4);
        // Cross-attention shapes without a mask, self-attention with the causal one.
        for (masked, nq, nk) in [(false, 3, 6), (true, 5, 5)] {
            let var = |n: usize, seed| {
                Var::from_vec(lcg(b * h * n * d, seed), (b, h, n, d), &dev).unwrap()
            };
            let (q, k, v) = (var(nq, 1), var(nk, 2), var(nk, 3));
            let w = Tensor::from_vec(lcg(b * h * nq * d, 4), (b, h, nq, d), &dev).unwrap();
            let mask = masked.then(|| crate::block::causal_mask(nq, &dev).unwrap());
            let fused =
                crate::block::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), mask.as_ref())
                    .unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            let mut scores = (q.as_tensor() * scale)
                .unwrap()
                .matmul(&k.as_tensor().t().unwrap())
                .unwrap();
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m).unwrap();
            }
            let composite = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)
                .unwrap()
                .matmul(v.as_tensor())
                .unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let err = crate::cpu::max_abs_diff(a, b);
                assert!(err < 1e-5, "{what} (masked {masked}): max error {err}");
            };
            close(&fused, &composite, "output");
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composite * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (t, name) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
                let f = gf.get(t).unwrap_or_else(|| panic!("fused: no {name}"));
                let c = gc.get(t).unwrap_or_else(|| panic!("composite: no {name}"));
                close(f, c, name);
            }
        }
    }
}
