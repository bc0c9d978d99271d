//! One typed error for the whole engine. Every message says what went wrong, where (file, tensor,
//! argument or field) and what to do about it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ddpm-wgpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU or software adapter could be found.
    #[error("no GPU adapter found (searched backends: {searched}). {hint}")]
    NoAdapter {
        /// Backends that were enumerated.
        searched: String,
        /// What to install or set to get one.
        hint: String,
    },
    /// The adapter the user asked for (by index or name) does not exist.
    #[error("adapter '{wanted}' not found; adapters seen: {available}. Pick one with --adapter INDEX|NAME or DDPM_ADAPTER (see `ddpm info`)")]
    AdapterNotFound {
        /// What the user asked for.
        wanted: String,
        /// What was available.
        available: String,
    },
    /// The user asked for a backend name we do not know.
    #[error("unknown backend '{0}': expected one of vulkan, metal, dx12, gl (comma-separated list allowed)")]
    UnknownBackend(String),
    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {msg}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// Underlying message.
        msg: String,
    },
    /// A tensor had the wrong shape for an op.
    #[error("{op}: {msg}")]
    Shape {
        /// The op or API call that checked the shape.
        op: &'static str,
        /// Expected vs got.
        msg: String,
    },
    /// A buffer would exceed a device limit.
    #[error("{what} needs {bytes} bytes, over the adapter's limit of {limit} bytes ({limit_name}); use a smaller batch or image size")]
    TooLarge {
        /// What was being allocated.
        what: String,
        /// Requested size.
        bytes: u64,
        /// Limit in force.
        limit: u64,
        /// Name of the wgpu limit.
        limit_name: &'static str,
    },
    /// The GPU ran out of memory.
    #[error("out of GPU memory allocating {what} ({bytes} bytes; {live} bytes already held by the engine); reduce the batch size or use gradient accumulation")]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// Requested size.
        bytes: u64,
        /// Bytes held by the engine at the time.
        live: u64,
    },
    /// A GPU validation or internal error (a bug in the engine: please report it).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or model folder is corrupt, truncated or does not match the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// File or folder.
        path: PathBuf,
        /// What is wrong (names the tensor or field).
        msg: String,
    },
    /// A config field holds a value the engine does not support.
    #[error("config field '{field}': {msg}")]
    Config {
        /// Field name, as in diffusers' config.json.
        field: String,
        /// Got vs supported.
        msg: String,
    },
    /// A command-line or API argument is out of range.
    #[error("argument {arg}: {msg}")]
    InvalidArgument {
        /// Argument name.
        arg: String,
        /// What was expected.
        msg: String,
    },
    /// A dataset file is unreadable or of the wrong kind.
    #[error("dataset {path}: {msg}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Training produced a NaN or infinite loss.
    #[error("non-finite loss ({value}) at step {step}; the last good checkpoint is kept. Lower the learning rate or enable gradient clipping")]
    NonFinite {
        /// Training step.
        step: u64,
        /// The offending value.
        value: f32,
    },
    /// Interrupted by the user (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// A blocking call in the browser (wasm32), where the page's one thread must not wait for
    /// the GPU.
    #[error("{what} would block the browser's only thread; call {instead} and await it")]
    WouldBlock {
        /// The blocking call.
        what: &'static str,
        /// Its async counterpart.
        instead: &'static str,
    },
}

impl Error {
    /// Convenience constructor for shape errors.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    /// Convenience constructor for I/O errors with the file attached.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// Convenience constructor for invalid arguments.
    pub fn arg(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg: arg.into(),
            msg: msg.into(),
        }
    }
}
