//! Criterion group "adapter": what the adapter charges for the engine's basic moves, the numbers
//! its kernels are designed around (see README, Benchmarks). Printed per item:
//! - an (almost) empty dispatch: one workgroup of 64 invocations, 500 in one submission (on
//!   lavapipe this is thread wake-ups, not work);
//! - a 256-byte buffer-to-buffer copy, 2000 in one submission;
//! - an 8-lane storage load, scalar against vec4, in a loop of 4096 workgroups × 1024
//!   iterations × 4 independent loads (on llvmpipe every non-uniform load is a loop over the
//!   lanes, so a vec4 costs far less than four scalars);
//! - the same 36 strided values per item (a Winograd output transform's gather) fetched as 36
//!   scalar loads per item, or as 36 vec4 loads per 4 items (a quarter of the load
//!   instructions, the same values): equal times mean the adapter charges per value moved, not
//!   per load;
//! - vec4 buffers loaded and stored as vec4<f32> against pairs of u64 (the two preludes of
//!   shaders/wide/, `Context::wide_loads`): the same floats in half the components.
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::{Context, WgslKernel};

const SRC: &str = r#"
struct Params { n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn tiny(@builtin(local_invocation_index) li: u32) {
    if li < p.n { y[li] = y[li] + 1.0; }
}

// (The vec4 counterpart of loads1 is wide_loads below, with W4 = vec4<f32>.)
@group(0) @binding(1) var<storage, read> a1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(8)
fn loads1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    let base = wg.x * 256u + li * 32u;
    for (var k = 0u; k < p.k; k++) {
        let q = base + (k & 1u) * 16u;
        s += (a1[q] + a1[q + 4u]) + (a1[q + 8u] + a1[q + 12u]);
    }
    out[wg.x * 8u + li] = vec4(s);
}

struct Gather { n: u32, plane: u32 }
@group(0) @binding(0) var<uniform> gp: Gather;
@group(0) @binding(1) var<storage, read> g1: array<f32>;
@group(0) @binding(1) var<storage, read> g4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> go: array<vec4<f32>>;
@compute @workgroup_size(64)
fn gather1(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= gp.n) { return; }
    var s = vec4(0.0);
    for (var e = 0u; e < 36u; e += 4u) {
        s += vec4(g1[e * gp.plane + i], g1[(e + 1u) * gp.plane + i],
                  g1[(e + 2u) * gp.plane + i], g1[(e + 3u) * gp.plane + i]);
    }
    go[i] = s;
}
@compute @workgroup_size(64)
fn gather4(@builtin(global_invocation_id) id: vec3<u32>) {
    let g = id.x;
    if (4u * g >= gp.n) { return; }
    let pl = gp.plane / 4u;
    var s0 = vec4(0.0);
    var s1 = vec4(0.0);
    var s2 = vec4(0.0);
    var s3 = vec4(0.0);
    for (var e = 0u; e < 36u; e += 4u) {
        let v0 = g4[e * pl + g];
        let v1 = g4[(e + 1u) * pl + g];
        let v2 = g4[(e + 2u) * pl + g];
        let v3 = g4[(e + 3u) * pl + g];
        s0 += vec4(v0.x, v1.x, v2.x, v3.x);
        s1 += vec4(v0.y, v1.y, v2.y, v3.y);
        s2 += vec4(v0.z, v1.z, v2.z, v3.z);
        s3 += vec4(v0.w, v1.w, v2.w, v3.w);
    }
    go[4u * g] = s0;
    go[4u * g + 1u] = s1;
    go[4u * g + 2u] = s2;
    go[4u * g + 3u] = s3;
}
"#;

// Loads and stores of W4 elements (shaders/wide/ appended): 4 workgroups of 8 lanes x k
// iterations x 4 W4 elements each.
const WIDE_SRC: &str = r#"
struct Params { n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wa: array<W4>;
@group(0) @binding(2) var<storage, read_write> wout: array<W4>;
@group(0) @binding(1) var<storage, read_write> wst: array<W4>;
@compute @workgroup_size(8)
fn wide_loads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    var s = vec4(0.0);
    let base = wg.x * 64u + li * 8u;
    for (var k = 0u; k < p.k; k++) {
        let q = base + (k & 1u) * 4u;
        s += (ld4(wa[q]) + ld4(wa[q + 1u])) + (ld4(wa[q + 2u]) + ld4(wa[q + 3u]));
    }
    wout[wg.x * 8u + li] = st4(s);
}
@compute @workgroup_size(8)
fn wide_stores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    var s = vec4(f32(li), 1.0, 2.0, 3.0);
    let base = wg.x * 64u + li * 8u;
    for (var k = 0u; k < p.k; k++) {
        let q = base + (k & 1u) * 4u;
        wst[q] = st4(s);
        wst[q + 1u] = st4(s + 1.0);
        wst[q + 2u] = st4(s + 2.0);
        wst[q + 3u] = st4(s + 3.0);
        s += 0.5;
    }
}
"#;

fn kernel(entry: &'static str) -> WgslKernel<'static> {
    WgslKernel {
        name: "adapter_bench",
        source: SRC,
        entry,
    }
}

fn params(n: u32, k: u32) -> Vec<u8> {
    [n, k].iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let y = ctx.zeros(&[64], "y").unwrap();
    let z = ctx.zeros(&[64], "z").unwrap();
    let dispatches = |ctx: &Context| {
        for _ in 0..500 {
            ctx.run_wgsl(&kernel("tiny"), &params(64, 0), &[&y], [1, 1, 1]).unwrap();
        }
    };
    let per = common::timed(&ctx, 3, || dispatches(&ctx)) / (3 * 500);
    println!(
        "adapter empty dispatch: {:.1} us  [{}]",
        per.as_secs_f64() * 1e6,
        common::adapter(&ctx)
    );
    let per = common::timed(&ctx, 3, || {
        for _ in 0..2000 {
            ctx.copy(&y, &z).unwrap();
        }
    }) / (3 * 2000);
    println!(
        "adapter 256-byte copy: {:.2} us  [{}]",
        per.as_secs_f64() * 1e6,
        common::adapter(&ctx)
    );

    let (wgs, k) = (4096u32, 1024u32);
    let a = ctx.zeros(&[wgs as usize * 256], "a").unwrap();
    let out = ctx.zeros(&[wgs as usize * 32], "out").unwrap();
    let loads = (wgs * k * 4) as f64;
    let per = common::timed(&ctx, 3, || {
        ctx.run_wgsl(&kernel("loads1"), &params(0, k), &[&a, &out], [wgs, 1, 1])
            .unwrap();
    }) / 3;
    println!(
        "adapter 8-lane scalar load: {:.2} ns per load (all threads)  [{}]",
        per.as_secs_f64() * 1e9 / loads,
        common::adapter(&ctx)
    );

    // 36 strided values for each of `items` items: plane = items, values [36, items].
    let items = 64 * 2048u32;
    let src = ctx.zeros(&[36 * items as usize], "gather.src").unwrap();
    let dst = ctx.zeros(&[4 * items as usize], "gather.dst").unwrap();
    for (entry, what, wgs) in [
        ("gather1", "36 scalar loads per item", items / 64),
        ("gather4", "36 vec4 loads per 4 items", items / 256),
    ] {
        let per = common::timed(&ctx, 3, || {
            ctx.run_wgsl(&kernel(entry), &params(items, items), &[&src, &dst], [wgs, 1, 1])
                .unwrap();
        }) / 3;
        println!(
            "adapter 36 strided values x {items} items, {what}: {:.2} ms, {:.2} ns per value  [{}]",
            per.as_secs_f64() * 1e3,
            per.as_secs_f64() * 1e9 / (36.0 * items as f64),
            common::adapter(&ctx)
        );
    }

    // The same loads and stores with W4 as vec4<f32> and as two u64s.
    let preludes = [
        (
            "vec4<f32>",
            "adapter_wide_f32",
            include_str!("../shaders/wide/vec4_f32.wgsl"),
        ),
        (
            "2 x u64",
            "adapter_wide_u64",
            include_str!("../shaders/wide/vec4_u64.wgsl"),
        ),
    ];
    let wa = ctx.zeros(&[wgs as usize * 256], "wide.a").unwrap();
    let wout = ctx.zeros(&[wgs as usize * 256], "wide.out").unwrap();
    let floats = (wgs * 8 * k * 16) as f64;
    for (what, name, prelude) in preludes {
        if name.ends_with("u64") && !ctx.features().contains(wgpu::Features::SHADER_INT64) {
            println!("adapter W4 as {what}: no SHADER_INT64 on {}", common::adapter(&ctx));
            continue;
        }
        let source = format!("{WIDE_SRC}\n{prelude}");
        for (entry, op) in [("wide_loads", "load"), ("wide_stores", "store")] {
            let k_ = WgslKernel {
                name,
                source: &source,
                entry,
            };
            let bufs: Vec<&ddpm_wgpu::Tensor> = if op == "load" { vec![&wa, &wout] } else { vec![&wout] };
            let per = common::timed(&ctx, 3, || {
                ctx.run_wgsl(&k_, &params(0, k), &bufs, [wgs, 1, 1]).unwrap();
            }) / 3;
            if op == "load" && name.ends_with("f32") {
                // The same wgs x k x 4 loads per lane as loads1, as vec4s.
                println!(
                    "adapter 8-lane vec4 load: {:.2} ns per load (all threads)  [{}]",
                    per.as_secs_f64() * 1e9 / loads,
                    common::adapter(&ctx)
                );
            }
            println!(
                "adapter W4 {op} as {what}: {:.3} ns per float (all threads)  [{}]",
                per.as_secs_f64() * 1e9 / floats,
                common::adapter(&ctx)
            );
        }
    }

    let mut g = c.benchmark_group("adapter");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(2));
    g.bench_function("500 empty dispatches", |b| {
        b.iter_custom(|iters| common::timed(&ctx, iters, || dispatches(&ctx)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
