//! Criterion group "attention": self-attention forward and forward + backward over the H·W
//! tokens of a U-Net feature map, [8,64,8,8] (64 tokens × 64 channels) and [8,128,16,16] (256
//! tokens × 128 channels), one head, with every kernel this adapter runs side by side (flash
//! everywhere, the GEMM kernel on CPU adapters with 8-wide subgroups). Prints ms and GFLOP/s
//! (4·B·T²·C for the forward; the backward recomputes the scores and adds 3 more products:
//! 14·B·T²·C in all).
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::ops::attention::{attention_backward_with, attention_with, supports, Kernel};

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let mut g = c.benchmark_group("attention");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(200));
    g.measurement_time(Duration::from_secs(3));
    for (b, ch, hw) in [(8usize, 64usize, 8usize), (8, 128, 16)] {
        let t = hw * hw;
        let n = b * t * ch;
        let vals: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let q = ctx.upload(&[b, t, ch], &vals).unwrap();
        let k = ctx.duplicate(&q, "k").unwrap();
        let v = ctx.duplicate(&q, "v").unwrap();
        let dout = ctx.duplicate(&q, "dout").unwrap();
        let fwd_flops = 4.0 * (b * t * t * ch) as f64;
        for kernel in [Kernel::Flash, Kernel::Gemm] {
            let name = format!("{kernel:?} [{b},{ch},{hw},{hw}]");
            if !supports(&ctx, kernel, b, t, ch, 1) {
                println!("attention {name}: not supported on {}", ctx.adapter_name());
                continue;
            }
            let fwd = || {
                attention_with(&ctx, kernel, &q, &k, &v, 1).unwrap();
            };
            let per = common::timed(&ctx, 3, fwd) / 3;
            common::report(&ctx, &format!("attention forward {name}"), per, fwd_flops, 0.0);
            g.bench_function(format!("forward {name}"), |bch| {
                bch.iter_custom(|iters| common::timed(&ctx, iters, fwd))
            });
            let train = || {
                let (o, lse) = attention_with(&ctx, kernel, &q, &k, &v, 1).unwrap();
                attention_backward_with(&ctx, kernel, &q, &k, &v, &o, &lse, &dout, 1).unwrap();
            };
            let per = common::timed(&ctx, 3, train) / 3;
            common::report(
                &ctx,
                &format!("attention forward+backward {name}"),
                per,
                3.5 * fwd_flops,
                0.0,
            );
            g.bench_function(format!("forward+backward {name}"), |bch| {
                bch.iter_custom(|iters| common::timed(&ctx, iters, train))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
