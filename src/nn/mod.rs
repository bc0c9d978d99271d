//! Layers and the DDPM U-Net (diffusers' `UNet2DModel` layout), each with a forward that records
//! what its hand-written backward needs.

pub(crate) mod classifier;
mod config;
mod encoder;
mod layers;
mod noisy_classifier;
mod params;
mod unet;

pub use classifier::{argmax, Classifier, ClassifierConfig, ClassifierTape, ClassifierTrainOptions, ClassifierTrainer};
pub use config::UNetConfig;
pub use layers::Mode;
pub use noisy_classifier::{
    accuracy_at, NoiseSchedule, NoisyClassifier, NoisyClassifierConfig, NoisyClassifierTape, NoisyClassifierTrainer,
};
pub(crate) use params::FrozenGuard;
pub use params::{Grads, ParamId, Params};
pub use unet::{UNet, UNetTape};

use crate::error::Result;
use crate::gpu::Context;

/// SplitMix64 stream for weight initialisation (host side, reproducible from a seed).
pub(crate) struct InitRng(pub(crate) u64);

impl InitRng {
    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, bound: f64) -> f32 {
        ((self.next_f64() * 2.0 - 1.0) * bound) as f32
    }
    fn normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// PyTorch's default init bound for conv/linear parameter `id` (weight or bias): 1/√fan_in of
/// the weight it belongs to (kaiming_uniform with a = √5, and the bias rule).
fn torch_default_bound(params: &Params, id: usize) -> f64 {
    let name = &params.names()[id];
    let w_name = name.trim_end_matches(".bias").to_string() + ".weight";
    let wshape = params.id(&w_name).map_or(params.shape(id), |w| params.shape(w));
    let fan_in: usize = wshape[1..].iter().product::<usize>().max(1);
    1.0 / (fan_in as f64).sqrt()
}

impl UNet {
    /// Initialise every parameter as PyTorch does for a freshly constructed `UNet2DModel`:
    /// conv and linear weights and biases U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with
    /// a = √5), GroupNorm weight 1 and bias 0, class embedding N(0, 1).
    pub fn init_random(&mut self, ctx: &Context, seed: u64) -> Result<()> {
        let mut rng = InitRng(seed ^ 0x00dd_b3ed);
        for id in 0..self.params.len() {
            let name = self.params.names()[id].clone();
            let shape = self.params.shape(id).to_vec();
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm");
            let data: Vec<f32> = if name == "class_embedding.weight" {
                (0..n).map(|_| rng.normal()).collect()
            } else if is_norm {
                vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
            } else {
                let bound = torch_default_bound(&self.params, id);
                (0..n).map(|_| rng.uniform(bound)).collect()
            };
            self.params.set(id, ctx.upload(&shape, &data)?)?;
        }
        Ok(())
    }
}
