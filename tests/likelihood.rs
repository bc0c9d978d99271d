//! The probability-flow ODE likelihood: the VP SDE's ∫β against quadrature and its closed form,
//! the whole ODE solve against the exact log-density of Gaussian data (whose ideal ε-model is
//! known in closed form), and a U-Net run end to end.
use std::sync::OnceLock;

use ddpm_wgpu::diffusion::likelihood::{
    bits_per_dim, ode_log_likelihood, vp_beta_integral, vp_std, EpsVjp, LikelihoodOptions, OdeSolver, UNetEps,
};
use ddpm_wgpu::diffusion::sde::vp_beta;
use ddpm_wgpu::diffusion::{BetaSchedule, Schedule};
use ddpm_wgpu::ops::elementwise as ew;
use ddpm_wgpu::{Context, Result, Tensor, UNet, UNetConfig};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

#[test]
fn beta_integral_matches_quadrature_and_the_linear_closed_form() {
    for (name, s) in [
        ("linear", Schedule::ddpm()),
        ("cosine", Schedule::new(BetaSchedule::Cosine, 1000, 1e-4, 0.02).unwrap()),
        ("linear T=7", Schedule::new(BetaSchedule::Linear, 7, 1e-3, 0.2).unwrap()),
    ] {
        for &t in &[0.0, 1e-5, 0.0123, 0.5, 0.77777, 1.0] {
            // Composite Simpson on a grid fine enough for a piecewise-linear integrand.
            let n = 200_000;
            let h = t / n as f64;
            let mut q = vp_beta(&s, 0.0) + vp_beta(&s, t);
            for i in 1..n {
                q += if i % 2 == 1 { 4.0 } else { 2.0 } * vp_beta(&s, i as f64 * h);
            }
            q *= h / 3.0;
            let got = vp_beta_integral(&s, t);
            assert!((got - q).abs() <= 1e-6 * q.abs().max(1.0), "{name} t={t}: {got} vs {q}");
        }
    }
    // Linear: β(t) = β_min + t(β_max − β_min), β_min = 0.1, β_max = 20 for Ho et al.'s schedule.
    let s = Schedule::ddpm();
    for &t in &[0.1, 0.5, 1.0] {
        let want = 0.1 * t + 0.5 * t * t * (20.0 - 0.1);
        assert!((vp_beta_integral(&s, t) - want).abs() < 1e-9, "t={t}");
    }
    assert!((vp_std(&s, 1.0) - (1.0 - (-10.05f64).exp()).sqrt()).abs() < 1e-12);
}

/// The ideal ε-model of data x₀ ~ N(0, s²I) under the VP SDE: x_t ~ N(0, v(t)I) with
/// v = s²m² + σ², so the score is −x/v and ε* = σx/v; its Jacobian is (σ/v)·I.
struct Gaussian {
    s2: f64,
    schedule: Schedule,
}

impl EpsVjp for Gaussian {
    fn eps_vjp(&self, ctx: &Context, x: &Tensor, label: f32, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = label as f64 / (self.schedule.len() - 1) as f64;
        let m2 = (-vp_beta_integral(&self.schedule, t)).exp();
        let sigma = (1.0 - m2).sqrt();
        let c = (sigma / (self.s2 * m2 + 1.0 - m2)) as f32;
        Ok((ew::scale(ctx, x, c)?, ew::scale(ctx, v, c)?))
    }
}

#[test]
fn gaussian_data_log_density_is_recovered() {
    let ctx = ctx();
    let s2 = 0.25f64;
    let model = Gaussian {
        s2,
        schedule: Schedule::ddpm(),
    };
    // 3 samples of 2×3×3 (awkward sizes), drawn from N(0, s²) by a fixed formula.
    let (b, d) = (3usize, 18usize);
    let xs: Vec<f32> = (0..b * d)
        .map(|i| (0.5 * ((i as f64 * 0.7).sin() + (i as f64 * 1.3).cos())) as f32)
        .collect();
    let x = ctx.upload(&[b, 2, 3, 3], &xs).unwrap();
    let exact: Vec<f64> = xs
        .chunks_exact(d)
        .map(|r| {
            let sq: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
            -0.5 * (d as f64 * (2.0 * std::f64::consts::PI * s2).ln() + sq / s2)
        })
        .collect();
    // (the solve, its largest error against the exact log-density)
    let solve = |opts: &LikelihoodOptions| {
        let l = ode_log_likelihood(ctx, &model, &model.schedule, &x, opts).unwrap();
        let err = l
            .log_p
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        (l, err)
    };
    let mut errs = Vec::new();
    for steps in [25, 100] {
        let (l, err) = solve(&LikelihoodOptions {
            steps,
            ..Default::default()
        });
        eprintln!(
            "{steps} Heun steps: log p {:?} vs exact {exact:?}; max error {err:.2e}",
            l.log_p
        );
        errs.push(err);
    }
    // Heun is second order: 4× the steps cut the error well below half; with 100 steps the
    // density is right to well under 0.01 nats of ~−2.4 nats per dimension.
    assert!(errs[1] < 0.01, "100 steps: error {}", errs[1]);
    assert!(errs[1] < 0.5 * errs[0] || errs[1] < 1e-3, "no convergence: {errs:?}");
    assert!((bits_per_dim(exact[0], d) - (-exact[0] / (d as f64 * 2f64.ln()) + 7.0)).abs() < 1e-12);

    // RK45 at score_sde's tolerance beats 100 Heun steps with fewer model calls, a tighter
    // tolerance is more accurate still, and every step costs six calls (plus two for the first
    // step's choice).
    let mut rk = Vec::new();
    for tol in [1e-5, 1e-7] {
        let (l, err) = solve(&LikelihoodOptions {
            steps: 1000,
            solver: OdeSolver::Rk45 { rtol: tol, atol: tol },
            ..Default::default()
        });
        eprintln!(
            "RK45 tol {tol:e}: {} steps, {} model calls, max error {err:.2e}",
            l.steps, l.evals
        );
        assert!(
            l.steps > 0 && l.evals >= 2 + 6 * l.steps && (l.evals - 2).is_multiple_of(6),
            "{l:?}"
        );
        rk.push((err, l.evals));
    }
    assert!(
        rk[0].0 < errs[1] && rk[0].1 < 200,
        "RK45 1e-5 {:?} vs 100 Heun steps {}",
        rk[0],
        errs[1]
    );
    assert!(rk[1].0 < rk[0].0 && rk[1].1 > rk[0].1, "tighter tolerance: {rk:?}");
    // Too few steps allowed: a clear error naming the flag.
    let opts = LikelihoodOptions {
        steps: 2,
        solver: OdeSolver::Rk45 { rtol: 1e-9, atol: 1e-9 },
        ..Default::default()
    };
    let e = ode_log_likelihood(ctx, &model, &model.schedule, &x, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--ode-steps") && e.contains("RK45"), "{e}");
    let bad = LikelihoodOptions {
        solver: OdeSolver::Rk45 { rtol: 0.0, atol: 1e-5 },
        ..Default::default()
    };
    assert!(ode_log_likelihood(ctx, &model, &model.schedule, &x, &bad).is_err());
}

#[test]
fn unet_likelihood_runs_and_is_deterministic() {
    let ctx = ctx();
    let mut cfg = UNetConfig::small(1, None);
    cfg.block_out_channels = vec![8, 16, 16];
    cfg.norm_num_groups = 4;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 3).unwrap();
    let xs: Vec<f32> = (0..2 * 64).map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0).collect();
    let x = ctx.upload(&[2, 1, 8, 8], &xs).unwrap();
    let model = UNetEps {
        unet: &unet,
        labels: None,
    };
    let opts = LikelihoodOptions {
        steps: 4,
        ..Default::default()
    };
    let s = Schedule::ddpm();
    let a = ode_log_likelihood(ctx, &model, &s, &x, &opts).unwrap();
    let b = ode_log_likelihood(ctx, &model, &s, &x, &opts).unwrap();
    assert_eq!(a.log_p, b.log_p, "same seed, other result");
    assert!(a.log_p.iter().all(|v| v.is_finite()), "{:?}", a.log_p);
    let c = ode_log_likelihood(ctx, &model, &s, &x, &LikelihoodOptions { seed: 1, ..opts }).unwrap();
    assert_ne!(
        a.delta, c.delta,
        "another probe seed must change the divergence estimate"
    );
    assert!(ode_log_likelihood(ctx, &model, &s, &x, &LikelihoodOptions { steps: 0, ..opts }).is_err());
}
