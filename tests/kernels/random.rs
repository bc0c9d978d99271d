// GPU random kernels vs the CPU twin (bit-identical), plus the generator's own correctness:
// Philox known answers, accuracy of the integer normal transform, and sample statistics.
use crate::common::ctx;
use ddpm_wgpu::{ops::random as ops, reference::random as rf};

#[test]
fn random_philox_known_answers() {
    // Random123's kat_vectors for philox4x32_10.
    assert_eq!(
        rf::philox4x32_10([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        rf::philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        rf::philox4x32_10(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

/// The words fed to the transform: both ends, the centre (sign change) and a stride through all
/// of u32 space.
fn sample_words() -> impl Iterator<Item = u32> {
    let ends = (0..50_000u32).chain(u32::MAX - 50_000..=u32::MAX);
    let centre = (1u32 << 31) - 50_000..(1u32 << 31) + 50_000;
    ends.chain(centre).chain((0..u32::MAX).step_by(4099))
}

#[test]
fn random_normal_transform_matches_exact_quantile() {
    let mut worst = 0.0f64;
    for w in sample_words() {
        let z = rf::normal_from_bits(w) as f64;
        let exact = rf::normal_quantile((w as f64 + 0.5) * 2f64.powi(-32));
        let err = (z - exact).abs();
        // 5e-8: the fixed-point polynomial (measured ≤ 3.3e-8); |exact|·2⁻²⁴: half an f32 ulp.
        assert!(
            err <= 5e-8 + exact.abs() * 2f64.powi(-24),
            "w={w:#x}: got {z}, exact {exact}"
        );
        worst = worst.max(err);
    }
    eprintln!("normal transform: max abs error {worst:.2e}");
    assert!(worst < 1e-6);
    // Monotone in w wherever neighbouring quantiles differ by more than the fixed-point error
    // (the deep tail and a stride of 4099 words), and odd: z(!w) = −z(w).
    for run in [(0u32..50_000).step_by(1), (0..u32::MAX).step_by(4099)] {
        let zs: Vec<f32> = run.map(rf::normal_from_bits).collect();
        assert!(zs.windows(2).all(|p| p[0] <= p[1]), "not monotone");
    }
    for w in sample_words() {
        assert_eq!(rf::normal_from_bits(!w), -rf::normal_from_bits(w), "w={w:#x}");
    }
}

#[test]
fn random_wgsl_table_is_the_reference_table() {
    let src = include_str!("../../shaders/random.wgsl");
    let start = src
        .find("NORMAL_POLY: array<i32, 288> = array<i32, 288>(")
        .expect("table in shader");
    let body = &src[start..];
    let body = &body[body.find('(').unwrap() + 1..body.find(");").unwrap()];
    let table: Vec<i32> = body
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(table, rf::NORMAL_POLY);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn first_mismatch(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
}

#[test]
fn random_gpu_bits_equal_cpu() {
    let ctx = ctx();
    // (n, seed, stream, first index): 1, primes, not a multiple of 256, 64-bit seeds, a run that
    // crosses index 2^32 (carry into the high counter word), and one far beyond it.
    let cases = [
        (1usize, 0u64, 0u32, 0u64),
        (7, 42, 1, 0),
        (257, u64::MAX, u32::MAX, 0),
        (10_007, 0x0123_4567_89ab_cdef, 3, 0),
        (4_099, 9, 0, (1u64 << 32) - 2_000),
        (1_000, 9, 7, 0x0000_7fff_dead_beef_u64 << 8),
    ];
    for (n, seed, stream, first) in cases {
        let u = ctx
            .read(&ops::rand_uniform_at(ctx, &[n], seed, stream, first).unwrap())
            .unwrap();
        let z = ctx
            .read(&ops::randn_at(ctx, &[n], seed, stream, first).unwrap())
            .unwrap();
        let u_cpu: Vec<f32> = (0..n as u64).map(|i| rf::uniform(seed, stream, first + i)).collect();
        let z_cpu: Vec<f32> = (0..n as u64).map(|i| rf::normal(seed, stream, first + i)).collect();
        let case = format!("n={n} seed={seed:#x} stream={stream} first={first:#x}");
        assert_eq!(
            bits(&u),
            bits(&u_cpu),
            "uniform {case}: {:?}",
            first_mismatch(&u, &u_cpu)
        );
        assert_eq!(
            bits(&z),
            bits(&z_cpu),
            "normal {case}: {:?}",
            first_mismatch(&z, &z_cpu)
        );
    }
    // The plain API is the `_at` form at index 0.
    let a = ctx.read(&ops::randn(ctx, &[3, 5], 11, 2).unwrap()).unwrap();
    let b: Vec<f32> = (0..15).map(|i| rf::normal(11, 2, i)).collect();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn random_gpu_normals_bit_identical_over_many_octaves() {
    // 2^21 normals reach |z| ≈ 5, i.e. more than 20 of the 32 octave polynomials.
    let ctx = ctx();
    let n = 1usize << 21;
    let (seed, stream) = (0xfeed_f00d_u64, 5);
    let got = ctx.read(&ops::randn(ctx, &[n], seed, stream).unwrap()).unwrap();
    let mut octaves = [false; 32];
    for (i, &g) in got.iter().enumerate() {
        let w = rf::block(seed, stream, i as u64)[1];
        let want = rf::normal_from_bits(w);
        assert_eq!(g.to_bits(), want.to_bits(), "element {i}: {g} vs {want}");
        let x = if w >> 31 == 0 { w } else { !w } & 0x7fff_ffff;
        octaves[(2 * x + 1).leading_zeros() as usize] = true;
    }
    let hit = octaves.iter().filter(|&&h| h).count();
    assert!(hit >= 18, "only {hit} octaves exercised");
}

/// (mean, variance, skewness, excess kurtosis) in f64.
fn moments(v: &[f32]) -> (f64, f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let c = |k: i32| v.iter().map(|&x| (x as f64 - mean).powi(k)).sum::<f64>() / n;
    let var = c(2);
    (mean, var, c(3) / var.powf(1.5), c(4) / (var * var) - 3.0)
}

#[test]
fn random_normal_statistics() {
    let ctx = ctx();
    let n = 1usize << 20;
    let z = ctx.read(&ops::randn(ctx, &[n], 2024, 0).unwrap()).unwrap();
    let (mean, var, skew, kurt) = moments(&z);
    let sn = (n as f64).sqrt();
    // Each bound is 5 standard errors of the statistic for N(0,1) samples (1/√n, √(2/n), √(6/n),
    // √(24/n)): a correct generator fails with probability < 1e-6.
    assert!(mean.abs() < 5.0 / sn, "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * 2f64.sqrt() / sn, "variance {var}");
    assert!(skew.abs() < 5.0 * 6f64.sqrt() / sn, "skewness {skew}");
    assert!(kurt.abs() < 5.0 * 24f64.sqrt() / sn, "excess kurtosis {kurt}");
    // Two-sided tail frequencies P(|z| > k) = 2·Φ(−k), within 5 binomial standard errors.
    for (k, p) in [
        (1.0, 0.317_310_507_862_914),
        (2.0, 0.045_500_263_896_358),
        (3.0, 0.002_699_796_063_260),
        (4.0, 6.334_248_366_623_996e-5),
    ] {
        let count = z.iter().filter(|x| x.abs() > k).count() as f64;
        let expect = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((count - expect).abs() < 5.0 * sd, "P(|z|>{k}): {count} vs {expect}");
    }
}

#[test]
fn random_uniform_statistics() {
    let ctx = ctx();
    let n = 1usize << 20;
    let u = ctx.read(&ops::rand_uniform(ctx, &[n], 77, 9).unwrap()).unwrap();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (mean, var, _, _) = moments(&u);
    let sn = (n as f64).sqrt();
    // 5 standard errors: sd(U) = √(1/12), sd of the sample variance of U = √(1/180/n).
    assert!((mean - 0.5).abs() < 5.0 * (1.0f64 / 12.0).sqrt() / sn, "mean {mean}");
    assert!(
        (var - 1.0 / 12.0).abs() < 5.0 * (1.0f64 / 180.0).sqrt() / sn,
        "variance {var}"
    );
    // χ² over 64 equal bins (63 degrees of freedom): the 1e-6 upper quantile is about 130.
    let mut counts = [0f64; 64];
    for &x in &u {
        counts[(x * 64.0) as usize] += 1.0;
    }
    let e = n as f64 / 64.0;
    let chi2: f64 = counts.iter().map(|c| (c - e) * (c - e) / e).sum();
    assert!(chi2 < 130.0, "chi2 {chi2}");
}

#[test]
fn random_streams_and_seeds_differ() {
    // Different (seed, stream) must give unrelated values, not shifted copies.
    let ctx = ctx();
    let a = ctx.read(&ops::randn(ctx, &[4096], 1, 0).unwrap()).unwrap();
    let b = ctx.read(&ops::randn(ctx, &[4096], 1, 1).unwrap()).unwrap();
    let c = ctx.read(&ops::randn(ctx, &[4096], 2, 0).unwrap()).unwrap();
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        let corr: f64 = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>() / 4096.0;
        // |correlation| of independent N(0,1) pairs has sd 1/64: 5 sd.
        assert!(corr.abs() < 5.0 / 64.0, "correlation {corr}");
    }
}

#[test]
fn random_zero_sized_shape_is_an_error() {
    let ctx = ctx();
    let err = ops::randn(ctx, &[3, 0], 1, 0).unwrap_err().to_string();
    assert!(err.contains("[3, 0]"), "{err}");
}
