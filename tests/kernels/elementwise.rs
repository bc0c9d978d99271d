use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::elementwise as ew, reference::elementwise as rf};

#[test]
fn axpby_awkward_lengths() {
    let ctx = ctx();
    // 1, a prime, not a multiple of 256, and one that needs a 2-D grid (> 65,535 workgroups).
    for (i, &n) in [1usize, 7, 257, 1000, 65_535 * 256 + 3].iter().enumerate() {
        let a = rand_vec(n, i as u64);
        let b = rand_vec(n, 100 + i as u64);
        let ta = ctx.upload(&[n], &a).unwrap();
        let tb = ctx.upload(&[n], &b).unwrap();
        let got = ctx
            .read(&ew::axpby(ctx, &ta, &tb, 0.5, -2.0).unwrap())
            .unwrap();
        // One rounding of each product and of the sum: a few ulps of values <= 2.5.
        assert_close(
            &format!("axpby n={n}"),
            &got,
            &rf::axpby(&to_f64(&a), &to_f64(&b), 0.5, -2.0),
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn axpby_shape_mismatch_is_an_error() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let err = ew::axpby(ctx, &a, &b, 1.0, 1.0).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}
