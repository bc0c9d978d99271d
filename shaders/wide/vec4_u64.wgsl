// Wide storage elements, u64 form: a `W4` holds 4 f32s as two u64s (the same 16 bytes, little
// endian). Appended to the shaders that declare their vec4 buffers as array<W4>, on CPU adapters
// with SHADER_INT64 (Context::wide_loads).
//
// Why: llvmpipe turns every component of a storage load or store into its own per-lane step
// (exec-mask branch, bounds check, scalar access), so the cost of a kernel is the number of
// components it moves, whatever their width. Two u64 components carry what four f32 ones did,
// and the unpacking below is a few whole-vector instructions. On llvmpipe a vec2<u64> load
// of 4 floats took 0.31-0.34 ns per float against 0.43-0.50 for a vec4<f32> (2026-12-03,
// throwaway probe); see README, Benchmarks, for what it does to the kernels.
alias W4 = vec2<u64>;

fn ld4(v: W4) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4(u32(v.x), u32(v.x >> 32u), u32(v.y), u32(v.y >> 32u)));
}

fn st4(v: vec4<f32>) -> W4 {
    let u = bitcast<vec4<u32>>(v);
    return vec2(u64(u.x) | (u64(u.y) << 32u), u64(u.z) | (u64(u.w) << 32u));
}

// Two f32s as one u64 (wino_output_v2 and wino_dy_v2: pairs of tiles).
alias W2 = u64;

fn ld2(v: W2) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2(u32(v), u32(v >> 32u)));
}

fn st2(v: vec2<f32>) -> W2 {
    let u = bitcast<vec2<u32>>(v);
    return u64(u.x) | (u64(u.y) << 32u);
}

// The full 64-bit product of two u32 as (hi, lo): one u64 multiply (Philox in
// shaders/lib/philox.wgsl), where the plain form takes four 16-bit products and their carries.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let p = u64(a) * u64(b);
    return vec2<u32>(u32(p >> 32u), u32(p));
}
