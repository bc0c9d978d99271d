//! PNG input and output: dataset images in, sample grids and denoising strips out.

use std::path::Path;

use crate::error::{Error, Result};

/// Decode a PNG as `channels` (1 or 3) planes of f32 in [−1, 1], CHW. Palette and 16-bit
/// images are expanded to 8 bits; gray becomes RGB by replication, RGB becomes gray by Rec. 601
/// luma; alpha is dropped. Returns (width, height, pixels).
pub fn read_png(path: &Path, channels: usize) -> Result<(usize, usize, Vec<f32>)> {
    let bad = |msg: String| Error::Data { path: path.into(), msg };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| bad(format!("unreadable PNG: {e}")))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("unreadable PNG data: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let src_c = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(bad("indexed PNG was not expanded".into())),
    };
    let mut out = vec![0f32; channels * h * w];
    for y in 0..h {
        let row = &buf[y * info.line_size..];
        for x in 0..w {
            let p = &row[x * src_c..x * src_c + src_c];
            let rgb = match src_c {
                1 | 2 => [p[0]; 3],
                _ => [p[0], p[1], p[2]],
            };
            let to = |v: f32| v / 127.5 - 1.0;
            if channels == 1 {
                let luma = 0.299 * rgb[0] as f32 + 0.587 * rgb[1] as f32 + 0.114 * rgb[2] as f32;
                out[y * w + x] = to(if src_c <= 2 { rgb[0] as f32 } else { luma });
            } else {
                for c in 0..3 {
                    out[(c * h + y) * w + x] = to(rgb[c] as f32);
                }
            }
        }
    }
    Ok((w, h, out))
}

/// Write images (NCHW f32 in [−1, 1], C = 1 or 3) as one PNG grid of `cols` columns with a
/// 2-pixel border.
pub fn write_grid(path: &Path, images: &[f32], n: usize, c: usize, h: usize, w: usize, cols: usize) -> Result<()> {
    if c != 1 && c != 3 {
        return Err(Error::arg("images", format!("{c} channels: a PNG grid needs 1 or 3")));
    }
    if images.len() != n * c * h * w || n == 0 {
        return Err(Error::arg(
            "images",
            format!("{} values do not hold {n} images of {c}×{h}×{w}", images.len()),
        ));
    }
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let pad = 2;
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let mut px = vec![0u8; gw * gh * c];
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = images[((i * c + ch) * h + y) * w + x];
                    let byte = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                    let gy = r * (h + pad) + pad + y;
                    let gx = col * (w + pad) + pad + x;
                    px[(gy * gw + gx) * c + ch] = byte;
                }
            }
        }
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, gw as u32, gh as u32);
        enc.set_color(if c == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc
            .write_header()
            .map_err(|e| Error::Gpu(format!("PNG encoder: {e}")))?;
        wr.write_image_data(&px)
            .map_err(|e| Error::Gpu(format!("PNG encoder: {e}")))?;
    }
    crate::checkpoint::write_atomic(path, &bytes)
}
