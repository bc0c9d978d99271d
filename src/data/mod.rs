//! Datasets: a folder of PNGs (subfolders = classes), MNIST-style IDX files (plain or .gz), and
//! the CIFAR-10 binary format. Images are held on the host as f32 in [−1, 1], NCHW.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Images (and optional class labels) in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixel data, `len × channels × height × width`, scaled to [−1, 1].
    pub images: Vec<f32>,
    /// Class of each image (empty when the dataset has no classes).
    pub labels: Vec<u32>,
    /// Number of classes (0 when unlabelled).
    pub num_classes: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Class names, when known (PNG subfolders).
    pub class_names: Vec<String>,
}

fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.into(),
        msg: msg.into(),
    }
}

/// Read a whole file, transparently gunzipping when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| data_err(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        if self.image_size() == 0 {
            0
        } else {
            self.images.len() / self.image_size()
        }
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per image.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_size();
        &self.images[i * n..(i + 1) * n]
    }

    /// Open a dataset by what `path` is: a folder of CIFAR-10 binary batches (`*.bin`, test
    /// batches skipped) or a single `.bin` batch; otherwise a folder of PNGs (read as `channels`
    /// channels); otherwise an IDX image file, with `labels` or, when that is `None`, the file
    /// beside it named with `images` → `labels` / `idx3` → `idx1` if it exists.
    ///
    /// ```no_run
    /// # fn main() -> ddpm_wgpu::Result<()> {
    /// let data = ddpm_wgpu::Dataset::open("my_pngs/".as_ref(), None, 3)?;
    /// println!("{} images of {}×{}", data.len(), data.height, data.width);
    /// # Ok(()) }
    /// ```
    pub fn open(path: &Path, labels: Option<&Path>, channels: usize) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if path.is_dir() {
            let mut bins: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "bin"))
                .filter(|f| !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test")))
                .collect();
            bins.sort();
            if bins.is_empty() {
                Self::from_png_folder(path, channels)
            } else {
                Self::from_cifar10(&bins)
            }
        } else if name.ends_with(".bin") {
            Self::from_cifar10(&[path.to_path_buf()])
        } else {
            let labels = labels.map(Path::to_path_buf).or_else(|| {
                let guess = path.with_file_name(name.replace("images", "labels").replace("idx3", "idx1"));
                (guess != path && guess.exists()).then_some(guess)
            });
            Self::from_idx(path, labels.as_deref())
        }
    }

    /// Forget the labels: train or evaluate unconditionally on a labelled dataset.
    pub fn drop_labels(&mut self) {
        self.labels.clear();
        self.num_classes = 0;
        self.class_names.clear();
    }

    /// Read MNIST-style IDX files: `images` (magic 0x803, u8 N×H×W) and optional `labels`
    /// (magic 0x801, u8 N). Either may be gzipped.
    pub fn from_idx(images: &Path, labels: Option<&Path>) -> Result<Self> {
        let b = read_maybe_gz(images)?;
        if b.len() < 16 || be_u32(&b, 0) != 0x0803 {
            return Err(data_err(
                images,
                "not an IDX image file (expected magic 0x00000803 and a 16-byte header)",
            ));
        }
        let (n, h, w) = (be_u32(&b, 4) as usize, be_u32(&b, 8) as usize, be_u32(&b, 12) as usize);
        if b.len() != 16 + n * h * w {
            return Err(data_err(
                images,
                format!(
                    "header says {n}×{h}×{w} bytes of pixels but the file holds {}; it is truncated or corrupt",
                    b.len() - 16
                ),
            ));
        }
        let px: Vec<f32> = b[16..].iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        let (labels, num_classes) = match labels {
            None => (Vec::new(), 0),
            Some(lp) => {
                let l = read_maybe_gz(lp)?;
                if l.len() < 8 || be_u32(&l, 0) != 0x0801 {
                    return Err(data_err(lp, "not an IDX label file (expected magic 0x00000801)"));
                }
                let ln = be_u32(&l, 4) as usize;
                if ln != n || l.len() != 8 + n {
                    return Err(data_err(
                        lp,
                        format!("holds {ln} labels ({} bytes), the image file {n} images", l.len() - 8),
                    ));
                }
                let labels: Vec<u32> = l[8..].iter().map(|&v| v as u32).collect();
                let k = labels.iter().max().map_or(0, |m| *m as usize + 1);
                (labels, k)
            }
        };
        Ok(Dataset {
            images: px,
            labels,
            num_classes,
            channels: 1,
            height: h,
            width: w,
            class_names: Vec::new(),
        })
    }

    /// Read CIFAR-10 binary batches (records of 1 label byte + 3072 bytes of 3×32×32 pixels).
    pub fn from_cifar10(files: &[PathBuf]) -> Result<Self> {
        const REC: usize = 1 + 3072;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for f in files {
            let b = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            if b.is_empty() || b.len() % REC != 0 {
                return Err(data_err(
                    f,
                    format!("{} bytes is not a multiple of the CIFAR-10 record size {REC}", b.len()),
                ));
            }
            for rec in b.chunks_exact(REC) {
                if rec[0] > 9 {
                    return Err(data_err(
                        f,
                        format!("label {} outside 0..9: not a CIFAR-10 batch", rec[0]),
                    ));
                }
                labels.push(rec[0] as u32);
                images.extend(rec[1..].iter().map(|&v| v as f32 / 127.5 - 1.0));
            }
        }
        let class_names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        .map(String::from)
        .to_vec();
        Ok(Dataset {
            images,
            labels,
            num_classes: 10,
            channels: 3,
            height: 32,
            width: 32,
            class_names,
        })
    }

    /// Read a folder of PNGs. Subfolders are classes (sorted by name); PNGs directly in the
    /// folder make an unlabelled dataset. All images must have the same size (the first one's);
    /// channel counts are converted to `channels` (gray ↔ RGB by replication / luma, alpha
    /// dropped), so a folder may mix them.
    pub fn from_png_folder(dir: &Path, channels: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::arg("--channels", format!("{channels}: expected 1 or 3")));
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
        let mut class_names = Vec::new();
        if subdirs.is_empty() {
            files.extend(entries.iter().filter(|p| is_png(p)).map(|p| (p.clone(), None)));
        } else {
            for (k, sd) in subdirs.iter().enumerate() {
                class_names.push(
                    sd.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                let mut fs: Vec<PathBuf> = std::fs::read_dir(sd)
                    .map_err(|e| Error::io(sd.as_path(), e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_png(p))
                    .collect();
                fs.sort();
                files.extend(fs.into_iter().map(|p| (p, Some(k as u32))));
            }
        }
        if files.is_empty() {
            return Err(data_err(
                dir,
                "no .png files found (put images in the folder, or one subfolder per class)",
            ));
        }
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut size = None;
        for (path, label) in &files {
            let (w, h, px) = crate::image::read_png(path, channels)?;
            match size {
                None => size = Some((w, h)),
                Some((w0, h0)) if (w, h) != (w0, h0) => {
                    return Err(data_err(
                        path,
                        format!("is {w}×{h}, but the dataset's images are {w0}×{h0}; resize it or move it out"),
                    ))
                }
                _ => {}
            }
            images.extend(px);
            if let Some(l) = label {
                labels.push(*l);
            }
        }
        let (w, h) = size.unwrap_or((0, 0));
        Ok(Dataset {
            images,
            labels,
            num_classes: class_names.len(),
            channels,
            height: h,
            width: w,
            class_names,
        })
    }

    /// Pad every image to `size`×`size` with the background value −1 (black), centred.
    /// Fashion-MNIST's 28×28 images become 32×32 with a 2-pixel border.
    pub fn pad_to(&mut self, size: usize) -> Result<()> {
        if self.height == size && self.width == size {
            return Ok(());
        }
        if self.height > size || self.width > size {
            return Err(Error::arg(
                "--image-size",
                format!("{size} is smaller than the images ({}×{})", self.height, self.width),
            ));
        }
        let (top, left) = ((size - self.height) / 2, (size - self.width) / 2);
        let n = self.len();
        let mut out = vec![-1.0f32; n * self.channels * size * size];
        for i in 0..n {
            for c in 0..self.channels {
                for y in 0..self.height {
                    let src = ((i * self.channels + c) * self.height + y) * self.width;
                    let dst = ((i * self.channels + c) * size + y + top) * size + left;
                    out[dst..dst + self.width].copy_from_slice(&self.images[src..src + self.width]);
                }
            }
        }
        self.images = out;
        self.height = size;
        self.width = size;
        Ok(())
    }
}

fn is_png(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}
