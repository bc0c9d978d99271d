//! CPU f64 reference for the conv2d ops: plain loops, no tiling, the definition written out.
//!
//! Layouts: x \[N,Cin,H,W\], w \[Cout,Cin,kh,kw\], bias \[Cout\], y \[N,Cout,Ho,Wo\], all row-major.
//! y\[n,co,oh,ow\] = bias\[co\] + Σ_{ci,r,s} w\[co,ci,r,s\] · x[n, ci, oh·stride − pad_top + r,
//! ow·stride − pad_left + s], with x read as 0 outside the image.

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDims {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding [top, bottom, left, right].
    pub pad: [usize; 4],
}

impl Conv2dDims {
    /// Output height and width: (H + top + bottom − kh) / stride + 1 (and likewise for W).
    pub fn out_hw(&self) -> (usize, usize) {
        let [t, b, l, r] = self.pad;
        (
            (self.h + t + b - self.kh) / self.stride + 1,
            (self.w + l + r - self.kw) / self.stride + 1,
        )
    }

    /// Input coordinate read by output coordinate `o` at kernel tap `k` with leading pad `pad`,
    /// or None when it falls into the zero padding.
    fn tap(&self, o: usize, k: usize, pad: usize, size: usize) -> Option<usize> {
        let i = (o * self.stride + k).checked_sub(pad)?;
        (i < size).then_some(i)
    }
}

/// One output element y\[n,co,oh,ow\] with `at` = [n, co, oh, ow] (used by tests that check a
/// sample of a large output).
pub fn conv2d_at(x: &[f64], w: &[f64], bias: Option<&[f64]>, d: &Conv2dDims, at: [usize; 4]) -> f64 {
    let [n, co, oh, ow] = at;
    let mut acc = bias.map_or(0.0, |b| b[co]);
    for ci in 0..d.cin {
        for r in 0..d.kh {
            let Some(ih) = d.tap(oh, r, d.pad[0], d.h) else {
                continue;
            };
            for s in 0..d.kw {
                let Some(iw) = d.tap(ow, s, d.pad[2], d.w) else {
                    continue;
                };
                acc += w[((co * d.cin + ci) * d.kh + r) * d.kw + s] * x[((n * d.cin + ci) * d.h + ih) * d.w + iw];
            }
        }
    }
    acc
}

/// Forward: y \[N,Cout,Ho,Wo\] = conv(x, w) + bias.
pub fn conv2d(x: &[f64], w: &[f64], bias: Option<&[f64]>, d: &Conv2dDims) -> Vec<f64> {
    let (ho, wo) = d.out_hw();
    let mut y = Vec::with_capacity(d.n * d.cout * ho * wo);
    for n in 0..d.n {
        for co in 0..d.cout {
            for oh in 0..ho {
                for ow in 0..wo {
                    y.push(conv2d_at(x, w, bias, d, [n, co, oh, ow]));
                }
            }
        }
    }
    y
}

/// dx \[N,Cin,H,W\] = Σ over every output that read x\[n,ci,ih,iw\] of dy · w (scatter form of the
/// transposed convolution, written as the adjoint of [`conv2d`]).
pub fn conv2d_backward_input(dy: &[f64], w: &[f64], d: &Conv2dDims) -> Vec<f64> {
    let (ho, wo) = d.out_hw();
    let mut dx = vec![0.0; d.n * d.cin * d.h * d.w];
    for n in 0..d.n {
        for co in 0..d.cout {
            for oh in 0..ho {
                for ow in 0..wo {
                    let g = dy[((n * d.cout + co) * ho + oh) * wo + ow];
                    for ci in 0..d.cin {
                        for r in 0..d.kh {
                            let Some(ih) = d.tap(oh, r, d.pad[0], d.h) else {
                                continue;
                            };
                            for s in 0..d.kw {
                                let Some(iw) = d.tap(ow, s, d.pad[2], d.w) else {
                                    continue;
                                };
                                dx[((n * d.cin + ci) * d.h + ih) * d.w + iw] +=
                                    g * w[((co * d.cin + ci) * d.kh + r) * d.kw + s];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// dw \[Cout,Cin,kh,kw\] = Σ_{n,oh,ow} dy\[n,co,oh,ow\] · x[n, ci, oh·stride − pad_top + r, ...].
pub fn conv2d_backward_weight(x: &[f64], dy: &[f64], d: &Conv2dDims) -> Vec<f64> {
    let (ho, wo) = d.out_hw();
    let mut dw = vec![0.0; d.cout * d.cin * d.kh * d.kw];
    for n in 0..d.n {
        for co in 0..d.cout {
            for oh in 0..ho {
                for ow in 0..wo {
                    let g = dy[((n * d.cout + co) * ho + oh) * wo + ow];
                    for ci in 0..d.cin {
                        for r in 0..d.kh {
                            let Some(ih) = d.tap(oh, r, d.pad[0], d.h) else {
                                continue;
                            };
                            for s in 0..d.kw {
                                let Some(iw) = d.tap(ow, s, d.pad[2], d.w) else {
                                    continue;
                                };
                                dw[((co * d.cin + ci) * d.kh + r) * d.kw + s] +=
                                    g * x[((n * d.cin + ci) * d.h + ih) * d.w + iw];
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

/// db \[Cout\] = Σ_{n,oh,ow} dy\[n,co,oh,ow\].
pub fn conv2d_backward_bias(dy: &[f64], d: &Conv2dDims) -> Vec<f64> {
    let (ho, wo) = d.out_hw();
    let plane = ho * wo;
    (0..d.cout)
        .map(|co| {
            (0..d.n)
                .map(|n| dy[(n * d.cout + co) * plane..][..plane].iter().sum::<f64>())
                .sum()
        })
        .collect()
}
