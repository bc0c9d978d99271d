//! Diffusion maths: schedules, the forward process, training (Algorithm 1) and samplers.

pub mod bpd;
pub mod eval;
pub mod fd;
pub mod generate;
pub mod hybrid;
pub mod importance;
pub mod likelihood;
pub mod sample;
pub mod schedule;
pub mod sde;
pub mod train;

pub use schedule::{BetaSchedule, Prediction, Schedule};
pub use train::{TrainConfig, Trainer};
