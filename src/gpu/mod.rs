//! The GPU context: instance, adapter choice, device, queue, pipeline cache, buffer pool,
//! command recording and readback. One explicit [`Context`], no globals.

pub mod adapter;
mod pipeline;
mod pool;

pub use adapter::{AdapterSummary, ContextOptions};
pub use pipeline::WgslKernel;
pub(crate) use pipeline::{Dispatch, Shader};
pub(crate) use pool::BufferPool as BufferPoolHandle;
pub use pool::MemoryStats;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crate::error::{Error, Result};
use pipeline::PipelineCache;
use pool::BufferPool;

/// Largest number of workgroups in one grid dimension that every adapter accepts.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// Wait for `fut`: the blocking face of an async call. In the browser (wasm32) the page's one
/// thread must never wait for the GPU, so there it returns [`Error::WouldBlock`] naming the
/// async call to await instead.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<T>(
    fut: impl Future<Output = Result<T>>,
    _what: &'static str,
    _instead: &'static str,
) -> Result<T> {
    pollster::block_on(fut)
}

/// Wait for `fut`: the blocking face of an async call. In the browser (wasm32) the page's one
/// thread must never wait for the GPU, so there it returns [`Error::WouldBlock`] naming the
/// async call to await instead.
#[cfg(target_arch = "wasm32")]
pub(crate) fn block_on<T>(
    _fut: impl Future<Output = Result<T>>,
    what: &'static str,
    instead: &'static str,
) -> Result<T> {
    Err(Error::WouldBlock { what, instead })
}

/// Run `f` inside an error scope of `filter`; returns its result and the first error it raised.
/// Native targets wait for the scope's verdict. In the browser that wait would block the page,
/// so no scope is opened: errors reach the uncaptured-error handler and come back from the next
/// readback ([`Context::check_error`]).
pub(crate) fn scoped<T>(
    device: &wgpu::Device,
    filter: wgpu::ErrorFilter,
    f: impl FnOnce() -> T,
) -> (T, Option<wgpu::Error>) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let scope = device.push_error_scope(filter);
        let out = f();
        (out, pollster::block_on(scope.pop()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (device, filter);
        (f(), None)
    }
}

/// The outcome of `Buffer::map_async` as a future: the callback fills the slot and wakes the
/// task. Native targets run the callback inside `Device::poll` (on this thread, or on another
/// one polling the same device at the time); the browser runs it from its event loop. A callback
/// dropped without running resolves the future with an error instead of leaving it pending.
#[derive(Clone, Default)]
struct Mapped(Arc<Mutex<MapSlot>>);

#[derive(Default)]
struct MapSlot {
    /// Set once, by the callback or its drop.
    resolved: bool,
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

/// Owned by the map callback; resolves the future when called or dropped.
struct MapCallback(Mapped);

impl Mapped {
    fn lock(&self) -> std::sync::MutexGuard<'_, MapSlot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resolve(&self, result: Result<()>) {
        let mut slot = self.lock();
        if !slot.resolved {
            slot.resolved = true;
            slot.result = Some(result);
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    fn callback(&self) -> impl FnOnce(std::result::Result<(), wgpu::BufferAsyncError>) + 'static {
        let guard = MapCallback(self.clone());
        move |r| {
            guard
                .0
                .resolve(r.map_err(|e| Error::Gpu(format!("mapping readback buffer: {e}"))))
        }
    }
}

impl Drop for MapCallback {
    fn drop(&mut self) {
        self.0.resolve(Err(Error::Gpu("readback callback never ran".into())));
    }
}

impl Future for Mapped {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Result<()>> {
        let mut slot = self.lock();
        match slot.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Work recorded but not yet submitted: one command encoder plus the uniform buffers it uses,
/// which go back to the pool once the encoder is submitted.
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    uniforms: Vec<wgpu::Buffer>,
    dispatches: u32,
}

/// The engine's handle on one GPU (or software) adapter.
///
/// Owns the device and queue, the pipeline cache (each pipeline is built once, keyed by shader,
/// entry point and override constants), the buffer pool (tensor buffers are reused between
/// steps), and the command encoder that ops record into. Work is submitted in one batch when
/// something is read back or [`Context::flush`] is called.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    pending: Mutex<Pending>,
    gpu_error: Arc<Mutex<Option<String>>>,
    readbacks: AtomicU64,
    submits: AtomicU64,
    /// Kernels move their vec4 buffers as pairs of u64 (see [`Context::wide_loads`]).
    wide_u64: bool,
    /// Per-kernel wall time when `DDPM_PROFILE` is set: every dispatch is submitted and waited
    /// for on its own (slow, but it works on adapters without timestamp queries).
    profile: Option<Profile>,
}

/// What `DDPM_PROFILE` gathers: (calls, seconds, FLOPs) per kernel, or per kernel and problem
/// size when `DDPM_PROFILE=shapes`.
struct Profile {
    by_shape: bool,
    map: Mutex<std::collections::HashMap<String, (u64, f64, f64, f64)>>,
}

/// CPU time this process has used, all threads, in seconds (None where the platform has no
/// cheap per-process clock). On a software adapter the kernels run on this process's threads, so
/// CPU time over wall time is how many cores a dispatch kept busy.
fn process_cpu_seconds() -> Option<f64> {
    #[cfg(all(unix, not(target_arch = "wasm32")))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec for the call to fill.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(all(unix, not(target_arch = "wasm32"))))]
    {
        None
    }
}

/// One line of [`Context::take_profile`]: a kernel (with its problem size under
/// `DDPM_PROFILE=shapes`), how often it ran, its wall time and the FLOPs it did where the op
/// counts them (the matrix products; 0 elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProfile {
    /// `shader::entry`, followed by the problem size under `DDPM_PROFILE=shapes`.
    pub name: String,
    /// Dispatches.
    pub calls: u64,
    /// Wall time of those dispatches, each submitted and waited for alone.
    pub secs: f64,
    /// Floating-point operations they did (0 where the op does not count them).
    pub flops: f64,
    /// CPU time the process used meanwhile, all threads (0 where it cannot be read). On a
    /// software adapter, `cpu_secs / secs` is the number of cores the kernel kept busy.
    pub cpu_secs: f64,
}

impl KernelProfile {
    /// GFLOP/s, where the op counts FLOPs.
    pub fn gflops(&self) -> Option<f64> {
        (self.flops > 0.0 && self.secs > 0.0).then(|| self.flops / self.secs / 1e9)
    }
}

/// Optional profile detail of a dispatch: a label of its problem size and the FLOPs it does.
pub(crate) struct Work<'a> {
    pub shape: &'a dyn Fn() -> String,
    pub flops: f64,
}

impl Context {
    /// Create a context with options from the environment (`DDPM_BACKEND`, `DDPM_ADAPTER`,
    /// falling back to wgpu's `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`). In the browser, await
    /// [`Context::new_async`] instead.
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::from_env())
    }

    /// Create a context on the adapter chosen by `opts`. In the browser, await
    /// [`Context::with_options_async`] instead.
    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        block_on(
            Self::with_options_async(opts),
            "Context::with_options",
            "Context::with_options_async",
        )
    }

    /// [`Context::new`] for the browser, where the adapter and device requests are promises
    /// the page awaits (there the only adapter is the browser's WebGPU one). The same steps as
    /// [`Context::new`] on native targets.
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(&ContextOptions::from_env()).await
    }

    /// [`Context::with_options`], awaited.
    pub async fn with_options_async(opts: &ContextOptions) -> Result<Self> {
        let instance = adapter::instance(opts)?;
        let adapter = adapter::choose(&instance, opts).await?;
        let info = adapter.get_info();
        // Subgroup kernels are written for naga, which rejects the `enable subgroups;` directive
        // the browser's WGSL compiler requires, so the browser build runs without them.
        let wanted = if cfg!(target_arch = "wasm32") {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                | wgpu::Features::SHADER_INT64
        };
        let features = adapter.features() & wanted;
        // Ask for the adapter's real limits: lavapipe allows 128 MiB storage bindings, far more
        // than wgpu's conservative defaults.
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("ddpm-wgpu device"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = adapter.request_device(&desc).await.map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            msg: e.to_string(),
        })?;
        Ok(Self::from_parts(device, queue, info, limits, features))
    }

    /// Share a device that the host application already created (a game engine, a UI toolkit).
    /// The engine uses only the features and limits the device was created with.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let limits = device.limits();
        let features = device.features();
        Self::from_parts(device, queue, info, limits, features)
    }

    fn from_parts(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        features: wgpu::Features,
    ) -> Self {
        let wide_u64 = wide_default(&info, features);
        let gpu_error = Arc::new(Mutex::new(None::<String>));
        let sink = gpu_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        Context {
            pool: Arc::new(BufferPool::new(device.clone(), limits.clone())),
            pipelines: PipelineCache::default(),
            device,
            queue,
            info,
            limits,
            features,
            pending: Mutex::new(Pending {
                encoder: None,
                uniforms: Vec::new(),
                dispatches: 0,
            }),
            gpu_error,
            readbacks: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            wide_u64,
            profile: std::env::var_os("DDPM_PROFILE").map(|v| Profile {
                by_shape: v == "shapes",
                map: Mutex::new(Default::default()),
            }),
        }
    }

    /// The chosen adapter's name, backend, device type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One-line description of the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn adapter_name(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The device limits in force.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Optional features that were enabled (f16, subgroups, timestamps).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// Whether subgroup operations are available to kernels.
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Whether kernels move their vec4 buffers as pairs of u64 (`shaders/wide/vec4_u64.wgsl`)
    /// rather than as `vec4<f32>`. The results are bit-identical either way; what changes is the
    /// speed. On by default on CPU adapters with SHADER_INT64 (lavapipe), where a kernel's cost
    /// is the number of components it moves and a u64 carries two floats; off elsewhere. The
    /// environment variable `DDPM_WIDE_LOADS=0` or `=1` overrides the default.
    pub fn wide_loads(&self) -> bool {
        self.wide_u64
    }

    /// This context with the wide (u64) loads of [`Context::wide_loads`] switched on or off,
    /// before any kernel has run (pipelines built earlier are dropped). Switching them on needs
    /// SHADER_INT64.
    pub fn with_wide_loads(mut self, on: bool) -> Result<Self> {
        if on && !self.features.contains(wgpu::Features::SHADER_INT64) {
            return Err(Error::Gpu(format!(
                "wide (u64) loads need SHADER_INT64, which {} does not offer: leave them off",
                self.adapter_name()
            )));
        }
        self.wide_u64 = on;
        self.pipelines = PipelineCache::default();
        Ok(self)
    }

    /// Whether `f16` may be used in shaders.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Largest storage buffer binding in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Bytes held in tensor buffers now, at peak, and in the pool's free lists.
    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    /// Reset the peak-memory counter to the current live size.
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Number of GPU→CPU readbacks since the context was created.
    pub fn readback_count(&self) -> u64 {
        self.readbacks.load(Ordering::Relaxed)
    }

    /// Time every dispatch from now on, as the `DDPM_PROFILE` environment variable does at
    /// creation (`by_shape`: as `DDPM_PROFILE=shapes`); read with [`Context::take_profile`].
    /// Each dispatch is then submitted and waited for alone, so everything runs slower.
    pub fn enable_profile(&mut self, by_shape: bool) {
        self.profile = Some(Profile {
            by_shape,
            map: Mutex::new(Default::default()),
        });
    }

    /// Per-kernel calls, seconds and FLOPs gathered since the last call, slowest first; empty
    /// unless the `DDPM_PROFILE` environment variable was set when the context was created
    /// (`DDPM_PROFILE=shapes` splits the matrix products by problem size).
    pub fn take_profile(&self) -> Vec<KernelProfile> {
        let Some(prof) = &self.profile else { return Vec::new() };
        let mut map = prof.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<KernelProfile> = map
            .drain()
            .map(|(name, (calls, secs, flops, cpu_secs))| KernelProfile {
                name,
                calls,
                secs,
                flops,
                cpu_secs,
            })
            .collect();
        v.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        v
    }

    /// Number of queue submits since the context was created.
    pub fn submit_count(&self) -> u64 {
        self.submits.load(Ordering::Relaxed)
    }

    /// Split `n` workgroups into a grid no dimension of which exceeds the adapter's limit.
    /// Kernels recover the linear index as `wg.x + wg.y * num_workgroups.x` and bounds-check.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self
            .limits
            .max_compute_workgroups_per_dimension
            .clamp(1, MAX_WORKGROUPS_PER_DIM);
        if n <= max {
            [n.max(1), 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    /// Record one compute dispatch into the pending encoder.
    pub(crate) fn dispatch(&self, d: Dispatch<'_>) -> Result<()> {
        self.dispatch_work(d, None)
    }

    /// [`Context::dispatch`] with the problem size and FLOPs that `DDPM_PROFILE` reports.
    pub(crate) fn dispatch_work(&self, d: Dispatch<'_>, work: Option<Work<'_>>) -> Result<()> {
        let pipeline = self
            .pipelines
            .get(&self.device, self.wide_u64, d.shader, d.entry, d.constants)?;
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = Vec::with_capacity(d.buffers.len() + 1);
        let uniform = if d.params.is_empty() {
            None
        } else {
            let u = self.pool.take_uniform(d.params.len() as u64)?;
            self.queue.write_buffer(&u, 0, d.params);
            Some(u)
        };
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        for (i, b) in d.buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.entry),
            layout: &layout,
            entries: &entries,
        });
        let [x, y, z] = d.workgroups;
        let max = self.limits.max_compute_workgroups_per_dimension;
        if x > max || y > max || z > max {
            return Err(Error::Gpu(format!(
                "{}::{} dispatch {:?} exceeds {} workgroups per dimension (engine bug: use Context::grid)",
                d.shader.name, d.entry, d.workgroups, max
            )));
        }
        let by_shape = self.profile.as_ref().is_some_and(|p| p.by_shape);
        let flops = work.as_ref().map_or(0.0, |w| w.flops);
        self.record(&pipeline, &bind_group, uniform, d.workgroups, d.entry, || match &work {
            Some(w) if by_shape => (format!("{}::{} {}", d.shader.name, d.entry, (w.shape)()), flops),
            _ => (format!("{}::{}", d.shader.name, d.entry), flops),
        });
        Ok(())
    }

    /// Run a WGSL compute kernel written outside the crate: the way to add an op without
    /// forking it. `params` (a multiple of 4 bytes, e.g. `bytemuck::bytes_of` of a `#[repr(C)]`
    /// struct) goes to the uniform at `@binding(0)` (omitted when empty), `tensors` to the storage
    /// buffers at `@binding(1)`, `@binding(2)`, ... in order; outputs are tensors the kernel
    /// writes (make them with [`Context::empty`] or [`Context::zeros`]). The dispatch is recorded
    /// like a built-in op's and runs with the next submit; the pipeline is built once and cached
    /// under (`kernel.name`, `kernel.entry`), apart from the built-in shaders.
    ///
    /// Everything that can be checked before recording is, and comes back as an error that
    /// leaves the context usable: WGSL errors (with the line), bindings outside group 0 or not
    /// matching `params`/`tensors`, the same tensor passed twice, a grid over the adapter's limit
    /// ([`Context::grid`] splits long 1-D grids). Out-of-bounds indices inside the kernel are the
    /// kernel's business: WGSL clamps them, so they give wrong values, never memory errors.
    ///
    /// ```
    /// use ddpm_wgpu::{Context, WgslKernel};
    /// # fn main() -> ddpm_wgpu::Result<()> {
    /// const SQUARE: &str = "
    ///     struct Params { n: u32 }
    ///     @group(0) @binding(0) var<uniform> p: Params;
    ///     @group(0) @binding(1) var<storage, read> x: array<f32>;
    ///     @group(0) @binding(2) var<storage, read_write> y: array<f32>;
    ///     @compute @workgroup_size(64)
    ///     fn square(@builtin(global_invocation_id) id: vec3<u32>) {
    ///         if id.x < p.n { y[id.x] = x[id.x] * x[id.x]; }
    ///     }";
    /// let ctx = Context::new()?;
    /// let x = ctx.upload(&[3], &[1.0, -2.0, 3.0])?;
    /// let y = ctx.empty(&[3], "y")?;
    /// let kernel = WgslKernel { name: "doc_square", source: SQUARE, entry: "square" };
    /// ctx.run_wgsl(&kernel, &3u32.to_le_bytes(), &[&x, &y], [1, 1, 1])?;
    /// assert_eq!(ctx.read(&y)?, vec![1.0, 4.0, 9.0]);
    /// # Ok(()) }
    /// ```
    pub fn run_wgsl(
        &self,
        kernel: &WgslKernel<'_>,
        params: &[u8],
        tensors: &[&crate::Tensor],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let what = format!("{}::{}", kernel.name, kernel.entry);
        let bad = |msg: String| Error::arg("run_wgsl", format!("{what}: {msg}"));
        if !params.len().is_multiple_of(4) {
            return Err(bad(format!("params are {} bytes, not a multiple of 4", params.len())));
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(bad(format!(
                "grid {workgroups:?} exceeds {max} workgroups per dimension (Context::grid splits it)"
            )));
        }
        for (i, a) in tensors.iter().enumerate() {
            if let Some(j) = tensors[..i].iter().position(|b| b.same_storage(a)) {
                return Err(bad(format!("tensors {j} and {i} share one buffer")));
            }
        }
        let pipeline = self.pipelines.get_user(&self.device, kernel)?;
        let layout = pipeline.get_bind_group_layout(0);
        let uniform = if params.is_empty() {
            None
        } else {
            let u = self.pool.take_uniform(params.len() as u64)?;
            self.queue.write_buffer(&u, 0, params);
            Some(u)
        };
        let mut entries = Vec::with_capacity(tensors.len() + 1);
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        for (i, t) in tensors.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: t.buffer().as_entire_binding(),
            });
        }
        // A bad bind group would poison the shared encoder: validate it on its own first.
        let (bind_group, error) = scoped(&self.device, wgpu::ErrorFilter::Validation, || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&what),
                layout: &layout,
                entries: &entries,
            })
        });
        if let Some(e) = error {
            if let Some(u) = uniform {
                self.pool.give_back_uniform(u);
            }
            return Err(bad(format!(
                "the kernel's bindings do not match {} params bytes and {} tensors: {e}",
                params.len(),
                tensors.len()
            )));
        }
        self.record(&pipeline, &bind_group, uniform, workgroups, kernel.entry, || {
            (what.clone(), 0.0)
        });
        Ok(())
    }

    /// Record one compute pass (pipeline, bind group, grid) into the pending encoder.
    fn record(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        uniform: Option<wgpu::Buffer>,
        workgroups: [u32; 3],
        pass_label: &str,
        profile_key: impl FnOnce() -> (String, f64),
    ) {
        let [x, y, z] = workgroups;
        let mut pending = self.lock_pending();
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ddpm ops"),
            })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(pass_label),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            if x > 0 && y > 0 && z > 0 {
                pass.dispatch_workgroups(x, y, z);
            }
        }
        if let Some(u) = uniform {
            pending.uniforms.push(u);
        }
        pending.dispatches += 1;
        self.profile_last(&mut pending, profile_key);
        // Keep command buffers bounded so a long recording does not hold every uniform alive.
        if pending.dispatches >= 4096 {
            self.submit_locked(&mut pending);
        }
    }

    /// Under `DDPM_PROFILE`, time the command just recorded alone: the encoder holds only it
    /// (every earlier one was submitted and waited for), so submit it and wait.
    fn profile_last(&self, pending: &mut Pending, profile_key: impl FnOnce() -> (String, f64)) {
        let Some(prof) = &self.profile else { return };
        let encoder = pending.encoder.take();
        let start = std::time::Instant::now();
        let cpu0 = process_cpu_seconds();
        if let Some(e) = encoder {
            self.queue.submit(Some(e.finish()));
        }
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let secs = start.elapsed().as_secs_f64();
        let cpu = match (cpu0, process_cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        let mut map = prof.map.lock().unwrap_or_else(|p| p.into_inner());
        let (name, flops) = profile_key();
        let slot = map.entry(name).or_insert((0, 0.0, 0.0, 0.0));
        slot.0 += 1;
        slot.1 += secs;
        slot.2 += flops;
        slot.3 += cpu;
    }

    /// Record a buffer-to-buffer copy into the pending encoder.
    pub(crate) fn copy_buffer(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        let mut pending = self.lock_pending();
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ddpm ops"),
            })
        });
        encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, Some(bytes));
        self.profile_last(&mut pending, || ("copy_buffer_to_buffer".to_string(), 0.0));
    }

    /// Record a zero-fill of a whole buffer.
    pub(crate) fn clear_buffer(&self, dst: &wgpu::Buffer) {
        let mut pending = self.lock_pending();
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ddpm ops"),
            })
        });
        encoder.clear_buffer(dst, 0, None);
    }

    /// Free the buffers parked in the pool.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// Write bytes into a buffer, ordered after everything recorded so far.
    pub(crate) fn write_buffer(&self, dst: &wgpu::Buffer, offset: u64, data: &[u8]) {
        // queue.write_buffer lands before the *next* submit; flush first so that work already
        // recorded against a reused pool buffer sees the old contents.
        let mut pending = self.lock_pending();
        self.submit_locked(&mut pending);
        self.queue.write_buffer(dst, offset, data);
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit_locked(&self, pending: &mut Pending) {
        if let Some(encoder) = pending.encoder.take() {
            self.queue.submit(Some(encoder.finish()));
            self.submits.fetch_add(1, Ordering::Relaxed);
        }
        for u in pending.uniforms.drain(..) {
            self.pool.give_back_uniform(u);
        }
        pending.dispatches = 0;
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) {
        let mut pending = self.lock_pending();
        self.submit_locked(&mut pending);
    }

    /// Submit everything recorded so far and wait for the GPU to finish it.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check_error()
    }

    /// Return (and clear) the first GPU error reported since the last check.
    pub fn check_error(&self) -> Result<()> {
        let mut slot = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(msg) if msg.to_lowercase().contains("out of memory") => Err(Error::OutOfMemory {
                what: msg,
                bytes: 0,
                live: self.pool.stats().live_bytes,
            }),
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// Copy `bytes` bytes from the start of `src` back to the CPU, after all recorded work.
    /// Native targets wait for the device inside, so the returned future is ready when first
    /// polled; in the browser it resolves once the page's event loop has run the mapping.
    pub(crate) async fn read_bytes_async(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut pending = self.lock_pending();
            let encoder = pending.encoder.get_or_insert_with(|| {
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ddpm ops"),
                })
            });
            encoder.copy_buffer_to_buffer(src, 0, &staging, 0, Some(bytes.next_multiple_of(4)));
            self.submit_locked(&mut pending);
        }
        self.readbacks.fetch_add(1, Ordering::Relaxed);
        let mapped = Mapped::default();
        staging.map_async(wgpu::MapMode::Read, .., mapped.callback());
        // Native: the callback has run when the wait returns, unless another thread polling
        // the device took it; then the future waits for that thread to run it.
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for readback: {e}")))?;
        let mapping = mapped.await;
        self.check_error()?;
        mapping?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("mapped range: {e}")))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.adapter_name())
            .finish()
    }
}

/// The default of [`Context::wide_loads`]: on for CPU adapters with SHADER_INT64, unless
/// `DDPM_WIDE_LOADS` says otherwise (`0` off, `1` on where SHADER_INT64 allows).
fn wide_default(info: &wgpu::AdapterInfo, features: wgpu::Features) -> bool {
    let int64 = features.contains(wgpu::Features::SHADER_INT64);
    match std::env::var("DDPM_WIDE_LOADS").as_deref().map(str::trim) {
        Ok("0") => false,
        Ok("1") => int64,
        _ => int64 && info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Worker threads for Mesa's software rasterizer (llvmpipe, which runs lavapipe's and the GL
/// backend's compute): four per core, unless `LP_NUM_THREADS` is already set. Returns the count
/// in effect, or None where it does not apply (the browser).
///
/// llvmpipe gives each of its worker threads an equal share of a dispatch's workgroups up
/// front, so a dispatch lasts as long as its slowest thread: one that wakes late or loses its
/// core (a busy or virtualised machine) holds the others up. With several threads per core the
/// operating system moves the waiting shares onto whichever core is free. On a 2-core VM
/// (2026-12-03, lavapipe, separate processes alternated) a small-preset training step's median
/// took 1.328 s with 8 threads and 1.390 s with 4 (8 rounds), 1.735 s and 2.042 s with a busy
/// loop on one core (6 rounds), 12 and 16 threads like 8; sampling the shipped model took
/// 14.17–14.69 s with 8 and 14.39–15.18 s with 4. Earlier, 4 threads against 2: 24-step DDIM
/// 0.82–0.94× the time. PyTorch's OpenMP threads behave the other way (4 threads on 2 cores
/// took 1.8–2× as long for DDIM-50), so its peer benchmarks keep one thread per core.
///
/// The driver reads the variable once, when the adapter is first enumerated, so call this at
/// the start of `main`, before any [`Context`] exists and before other threads start (it sets a
/// process environment variable). The `ddpm` CLI and the benchmarks do.
pub fn tune_software_threads() -> Option<usize> {
    #[cfg(target_arch = "wasm32")]
    {
        None
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        if let Some(n) = std::env::var("LP_NUM_THREADS").ok().and_then(|v| v.trim().parse().ok()) {
            return Some(n);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // llvmpipe clamps the count to its own maximum; 32 keeps the request modest on big hosts.
        let n = (4 * cores).min(32);
        std::env::set_var("LP_NUM_THREADS", n.to_string());
        Some(n)
    }
}
