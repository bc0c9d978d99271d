//! Criterion group for the ddpm kernels.
mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let _ = (&ctx, c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
