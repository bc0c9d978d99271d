//! Buffer pool: tensor buffers are recycled by exact size so that a training or sampling step
//! allocates nothing after the first one. Also tracks live and peak bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Memory held by the engine's tensor buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in buffers currently owned by tensors.
    pub live_bytes: u64,
    /// Highest `live_bytes` seen (since creation or the last reset).
    pub peak_bytes: u64,
    /// Bytes parked in the free lists, ready for reuse.
    pub pooled_bytes: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    uniforms: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: MemoryStats,
}

pub(crate) struct BufferPool {
    device: wgpu::Device,
    limits: wgpu::Limits,
    inner: Mutex<Inner>,
}

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl BufferPool {
    pub fn new(device: wgpu::Device, limits: wgpu::Limits) -> Self {
        BufferPool {
            device,
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A storage buffer of exactly `bytes` bytes (rounded up to 4), reused when possible.
    /// Contents are undefined.
    pub fn take(&self, bytes: u64, what: &str) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        let limit = self.limits.max_storage_buffer_binding_size;
        if size > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes: size,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        if size > self.limits.max_buffer_size {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes: size,
                limit: self.limits.max_buffer_size,
                limit_name: "max_buffer_size",
            });
        }
        let mut inner = self.lock();
        let reused = inner.free.get_mut(&size).and_then(|v| v.pop());
        let buf = match reused {
            Some(b) => {
                inner.stats.pooled_bytes -= size;
                b
            }
            None => {
                let live = inner.stats.live_bytes;
                drop(inner);
                let (b, error) = super::scoped(&self.device, wgpu::ErrorFilter::OutOfMemory, || {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(what),
                        size,
                        usage: STORAGE_USAGE,
                        mapped_at_creation: false,
                    })
                });
                if error.is_some() {
                    return Err(Error::OutOfMemory {
                        what: what.to_string(),
                        bytes: size,
                        live,
                    });
                }
                inner = self.lock();
                b
            }
        };
        inner.stats.live_bytes += size;
        inner.stats.peak_bytes = inner.stats.peak_bytes.max(inner.stats.live_bytes);
        Ok(buf)
    }

    /// Return a storage buffer to the free list.
    pub fn give_back(&self, buf: wgpu::Buffer) {
        let size = buf.size();
        let mut inner = self.lock();
        inner.stats.live_bytes = inner.stats.live_bytes.saturating_sub(size);
        inner.stats.pooled_bytes += size;
        inner.free.entry(size).or_default().push(buf);
    }

    /// A uniform buffer for kernel parameters (at least `bytes`, rounded to 16).
    pub fn take_uniform(&self, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(16).next_multiple_of(16);
        if let Some(b) = self.lock().uniforms.get_mut(&size).and_then(|v| v.pop()) {
            return Ok(b);
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    pub fn give_back_uniform(&self, buf: wgpu::Buffer) {
        self.lock().uniforms.entry(buf.size()).or_default().push(buf);
    }

    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    pub fn reset_peak(&self) {
        let mut inner = self.lock();
        inner.stats.peak_bytes = inner.stats.live_bytes;
    }

    /// Free every parked buffer.
    pub fn trim(&self) {
        let mut inner = self.lock();
        inner.free.clear();
        inner.stats.pooled_bytes = 0;
    }
}
