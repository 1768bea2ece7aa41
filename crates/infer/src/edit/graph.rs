//! The differentiable pieces of a Llama layer for the fact editor's optimisation, built from
//! candle operations that all have a backward pass.
//!
//! candle 0.11's fused `softmax_last_dim`, `rms_norm` and `rope` kernels have no backward: a
//! graph through them silently loses its gradient. These are the same functions written with
//! elementary operations (the maximum subtracted before `exp` is detached: softmax does not
//! depend on it). A frozen weight's product is a custom operation whose backward gives the
//! input's gradient only: candle's matmul would also compute the weight's, an unused product
//! as large as the forward one.

use crate::kernel::{self, Owned};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use std::sync::Arc;

/// `x @ Wᵀ` for a constant `W` (`[out, in]`), differentiable in `x` only; both products run
/// in the stored-width kernels. The backward multiplies by a transposed copy where `W` is
/// plain values (BF16, F32: the blocked kernel at twice the memory), and reads quantized blocks
/// by rows where it is not (no copy: a GGUF's edit stays a small multiple of its file).
#[derive(Clone)]
pub struct Frozen {
    w: Arc<(Owned, Option<Owned>)>,
    out: usize,
    input: usize,
}

impl Frozen {
    /// `w` is `[out, input]`.
    pub fn new(w: Owned, out: usize, input: usize) -> Frozen {
        let t = w.transposed(out, input);
        Frozen {
            w: Arc::new((w, t)),
            out,
            input,
        }
    }

    /// Bytes of the matrix (and of its transposed copy).
    pub fn bytes(&self) -> usize {
        self.w.0.bytes() + self.w.1.as_ref().map_or(0, Owned::bytes)
    }

    /// Whether the matrix is held as quantized blocks.
    pub fn is_blocks(&self) -> bool {
        matches!(self.w.0, Owned::Blocks(..))
    }

    /// `x @ Wᵀ` (`x` is `[n, in]`).
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(self.clone())
    }
}

/// `x @ Wᵀ` for `x` `[n, input]` in the kernel.
fn product(w: &Owned, x: &[f32], n: usize, out: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out];
    kernel::matmat(w.stored(), x, n, &mut y);
    y
}

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear needs a contiguous input");
        };
        let xs = &storage.as_slice::<f32>()?[start..end];
        let (n, input) = layout.shape().dims2()?;
        if input != self.input {
            candle_core::bail!(
                "frozen-linear: {input} inputs for a matrix of {}",
                self.input
            );
        }
        let y = product(&self.w.0, xs, n, self.out);
        Ok((CpuStorage::F32(y), Shape::from((n, self.out))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // grad @ W = grad @ (Wᵀ)ᵀ.
        let n = grad.dim(0)?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let y = match &self.w.1 {
            Some(t) => product(t, &g, n, self.input),
            None => {
                let mut y = vec![0f32; n * self.input];
                kernel::matmat_transposed(self.w.0.stored(), &g, n, &mut y);
                y
            }
        };
        Ok(Some(Tensor::from_vec(y, (n, self.input), grad.device())?))
    }
}

/// RMSNorm over the last axis: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&scale)?.broadcast_mul(weight)
}

/// Softmax over the last axis.
pub fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last axis.
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// `[t, hd/2]` rotary tables (cos or sin) as the `[t, hd]` ones [`rope`] takes.
pub fn full_width(half: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::cat(&[half, half], D::Minus1)
}

/// Rotary positions in the rotate-half layout: `x` is `[heads, t, hd]`, `cos`/`sin` `[t, hd]`
/// ([`full_width`]).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
