// Philox-4x32-10 (Salmon et al. 2011), shared by the kernels that draw random numbers:
// appended by the engine (`gpu::pipeline::module_source`) to every shader that uses it,
// after the wide prelude of shaders/wide/, which supplies mul_wide (the full 32×32-bit product).
// CPU twin: src/reference/random.rs.

// Ten rounds; the key is bumped by the Weyl constants before every round but the first.
fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
        }
        let p0 = mul_wide(0xd2511f53u, c.x);
        let p1 = mul_wide(0xcd9e8d57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Dropout keep mask of the four elements 4q..4q+3 of a tensor (ops::dropout's contract: element
// i is kept when the top 24 bits of word i % 4 of Philox block ⌊i/4⌋ (counter (⌊i/4⌋, 0, stream,
// 0), key seed) are at least thresh = ⌈p·2²⁴⌉).
fn dropout_keep4(q: u32, seed: vec2<u32>, stream: u32, thresh: u32) -> vec4<bool> {
    return (philox(vec4<u32>(q, 0u, stream, 0u), seed) >> vec4<u32>(8u)) >= vec4<u32>(thresh);
}

// A dropout drawn in-line by a kernel, as a member of its uniform params (Rust twin:
// ops::dropout::DropParams): off when on == 0; thresh = ⌈p·2²⁴⌉, scale = 1/(1 − p).
struct DropParams {
    on: u32,
    thresh: u32,
    scale: f32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    _pad0: u32,
    _pad1: u32,
}

// The 4 elements of a tensor's vec4 q (elements 4q..4q+3) through the dropout d: masked and
// scaled when it is on.
fn dropout_apply4(v: vec4<f32>, q: u32, d: DropParams) -> vec4<f32> {
    if (d.on == 0u) {
        return v;
    }
    let keep = dropout_keep4(q, vec2(d.seed_lo, d.seed_hi), d.stream, d.thresh);
    return select(vec4(0.0), v * d.scale, keep);
}
