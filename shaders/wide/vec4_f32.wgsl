// Wide storage elements, plain form: a `W4` is a vec4<f32>, loaded and stored as it is. Appended
// to the shaders that declare their vec4 buffers as array<W4> (see shaders/wide/vec4_u64.wgsl
// for why) on adapters where the u64 form does not pay.
alias W4 = vec4<f32>;

fn ld4(v: W4) -> vec4<f32> {
    return v;
}

fn st4(v: vec4<f32>) -> W4 {
    return v;
}

// Two f32s as they are (wino_output_v2 and wino_dy_v2: pairs of tiles).
alias W2 = vec2<f32>;

fn ld2(v: W2) -> vec2<f32> {
    return v;
}

fn st2(v: vec2<f32>) -> W2 {
    return v;
}

// The full 64-bit product of two u32 as (hi, lo), from 16-bit halves (plain WGSL has no u64):
// Philox in shaders/lib/philox.wgsl.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    // carries out of the low word: each term < 2^16, sum < 2^18
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}
