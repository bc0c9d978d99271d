//! The importance sampler of t (improved DDPM §3.3) on a fixed loss history: warm-up, the
//! distribution p_t ∝ √E[L_t²] with the uniform share, the history window of 10, the inverse-CDF
//! draw and the 1/(T·p_t) reweighting. Pure host code: every number is checked exactly (1e-15).

use ddpm_wgpu::diffusion::importance::{LossSecondMoment, HISTORY_PER_TERM};

fn close(name: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-15 * want.abs().max(1.0),
        "{name}: {got} vs {want}"
    );
}

#[test]
fn distribution_and_reweighting_on_a_fixed_history() {
    let t_max = 5;
    let mut s = LossSecondMoment::new(t_max).unwrap();
    // Warm-up: uniform until every t has 10 values (t = 4 gets only 9 here).
    for t in 0..t_max {
        for k in 0..HISTORY_PER_TERM - usize::from(t == 4) {
            // L_t alternates between (t+1) and 3(t+1): E[L²] = 5 (t+1)², √E[L²] = √5 (t+1)
            s.update(
                t,
                if k % 2 == 0 {
                    (t + 1) as f64
                } else {
                    3.0 * (t + 1) as f64
                },
            )
            .unwrap();
        }
    }
    assert!(!s.warmed_up());
    assert_eq!(s.probabilities(), vec![0.2; t_max]);
    assert_eq!(s.sample(0.99), (4, 1.0));
    s.update(4, 15.0).unwrap();
    assert!(s.warmed_up());
    // √E[L_t²] ∝ t + 1: p_t = 0.999 (t+1)/15 + 0.001/5
    let p = s.probabilities();
    for (t, &pt) in p.iter().enumerate() {
        close(&format!("p_{t}"), pt, 0.999 * (t + 1) as f64 / 15.0 + 0.001 / 5.0);
    }
    close("Σp", p.iter().sum(), 1.0);
    // Inverse CDF: u just below/above each cumulative edge.
    let mut edge = 0.0;
    for (t, &pt) in p.iter().enumerate() {
        let (got_t, w) = s.sample(edge + 0.5 * pt);
        assert_eq!(got_t, t);
        close(&format!("w_{t}"), w, 1.0 / (t_max as f64 * pt));
        edge += pt;
        if t + 1 < t_max {
            assert_eq!(s.sample(edge - 1e-12).0, t);
            assert_eq!(s.sample(edge + 1e-12).0, t + 1);
        }
    }
    // Unbiased: E_p[w_t L_t] = (1/T) Σ L_t for any per-t losses.
    let losses = [0.3, 2.0, 0.7, 1.1, 5.0];
    let weighted: f64 = (0..t_max).map(|t| p[t] * losses[t] / (t_max as f64 * p[t])).sum();
    close("E_p[w L]", weighted, losses.iter().sum::<f64>() / t_max as f64);
    // The window keeps the last 10: ten new values of 0 for t = 4 wipe its old ones; then only
    // the uniform share is left for it.
    for _ in 0..HISTORY_PER_TERM {
        s.update(4, 0.0).unwrap();
    }
    assert_eq!(s.history(4), &[0.0; HISTORY_PER_TERM]);
    let p = s.probabilities();
    close("p_4 after zeros", p[4], 0.001 / 5.0);
    close("p_0 after zeros", p[0], 0.999 * 1.0 / 10.0 + 0.001 / 5.0);
    // One more value shifts out exactly the oldest.
    s.update(0, 7.0).unwrap();
    assert_eq!(s.history(0).len(), HISTORY_PER_TERM);
    assert_eq!(s.history(0)[0], 3.0);
    assert_eq!(s.history(0)[HISTORY_PER_TERM - 1], 7.0);
    // Bad input is refused.
    assert!(s.update(5, 1.0).unwrap_err().to_string().contains("0..5"));
    assert!(s.update(1, f64::NAN).is_err());
    assert!(LossSecondMoment::new(0).is_err());
}
