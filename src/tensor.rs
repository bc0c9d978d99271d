//! Tensor = GPU buffer + shape (NCHW for feature maps) + dtype.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Context;

/// Element type of a tensor's storage. Only `F32` is computed on today; `F16` storage (through
/// the `half` crate) is reserved so that the layout does not change when it lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (storage only; not yet used by kernels).
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// Owns one pooled buffer; gives it back to the pool when the last tensor view drops.
struct Storage {
    buffer: Option<wgpu::Buffer>,
    pool: Arc<crate::gpu::BufferPoolHandle>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give_back(b);
        }
    }
}

/// An n-dimensional array in GPU memory. Cloning is cheap and shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Size of the data in bytes.
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// The underlying buffer (for custom kernels).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage
            .buffer
            .as_ref()
            .expect("tensor storage is present until drop")
    }
    /// Whether two tensors share one buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Same data, another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot view {:?} ({} elements) as {:?}",
                    self.shape,
                    self.numel(),
                    shape
                ),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// `(N, C, H, W)` of a rank-4 tensor, or a shape error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(Error::shape(
                op,
                format!("expected a 4-D NCHW tensor, got {:?}", self.shape),
            )),
        }
    }

    /// `(rows, cols)` of a rank-2 tensor, or a shape error naming `op`.
    pub fn dims2(&self, op: &'static str) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(Error::shape(op, format!("expected a 2-D tensor, got {:?}", self.shape))),
        }
    }

    /// Error unless `self` has exactly `want` as shape.
    pub fn expect_shape(&self, op: &'static str, name: &str, want: &[usize]) -> Result<()> {
        if self.shape != want {
            return Err(Error::shape(
                op,
                format!("{name}: expected shape {want:?}, got {:?}", self.shape),
            ));
        }
        Ok(())
    }
}

impl Context {
    /// An uninitialised f32 tensor from the pool (contents undefined until a kernel writes it).
    pub fn empty(&self, shape: &[usize], label: &str) -> Result<Tensor> {
        let n = numel(shape);
        if n == 0 {
            return Err(Error::shape("empty", format!("{label}: zero-sized tensor {shape:?}")));
        }
        let buffer = self.pool.take((n * 4) as u64, label)?;
        Ok(Tensor {
            storage: Arc::new(Storage {
                buffer: Some(buffer),
                pool: self.pool.clone(),
            }),
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    /// A zero-filled f32 tensor (the clear is recorded, not executed immediately).
    pub fn zeros(&self, shape: &[usize], label: &str) -> Result<Tensor> {
        let t = self.empty(shape, label)?;
        self.clear(&t);
        Ok(t)
    }

    /// Record a zero-fill of `t`.
    pub fn clear(&self, t: &Tensor) {
        self.clear_buffer(t.buffer());
    }

    /// Upload host data as an f32 tensor of the given shape.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(Error::shape(
                "upload",
                format!(
                    "shape {shape:?} holds {} elements but {} were given",
                    numel(shape),
                    data.len()
                ),
            ));
        }
        let t = self.empty(shape, "upload")?;
        self.write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Overwrite the contents of `t` with host data of the same length.
    pub fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        if t.numel() != data.len() {
            return Err(Error::shape(
                "write",
                format!(
                    "tensor {:?} holds {} elements but {} were given",
                    t.shape(),
                    t.numel(),
                    data.len()
                ),
            ));
        }
        self.write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Run everything recorded so far and copy `t` back to the host. In the browser, await
    /// [`Context::read_async`] instead.
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        crate::gpu::block_on(self.read_async(t), "Context::read", "Context::read_async")
    }

    /// [`Context::read`], awaited: the browser's readback (the mapping resolves from the page's
    /// event loop). On native targets the future is ready when first polled.
    pub async fn read_async(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes_async(t.buffer(), t.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Record a copy of `src` into `dst` (same number of elements).
    pub fn copy(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.numel() != dst.numel() {
            return Err(Error::shape(
                "copy",
                format!(
                    "source {:?} and destination {:?} differ in size",
                    src.shape(),
                    dst.shape()
                ),
            ));
        }
        self.copy_buffer(src.buffer(), 0, dst.buffer(), 0, src.bytes());
        Ok(())
    }

    /// A new tensor holding a copy of `src`.
    pub fn duplicate(&self, src: &Tensor, label: &str) -> Result<Tensor> {
        let t = self.empty(src.shape(), label)?;
        self.copy(src, &t)?;
        Ok(t)
    }
}
