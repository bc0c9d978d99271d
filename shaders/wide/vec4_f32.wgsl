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
