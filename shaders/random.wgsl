// Counter-based random numbers (Philox-4x32-10) and the kernels that draw them in-line: fills,
// dropout, DDPM forward noising and the fused sampler update. All random values are computed with
// u32/i32 arithmetic only, so every adapter produces exactly the bits of the CPU twin in
// src/reference/random.rs (which documents the stream layout and the normal transform).
//
// Element i of a launch uses Philox block counter = [idx_lo, idx_hi, stream, 0],
// key = [seed_lo, seed_hi], where idx = offset + i as a 64-bit integer.

struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    off_lo: u32,
    off_hi: u32,
    // dropout: keep iff (r0 >> 8) >= thresh, i.e. uniform >= p
    thresh: u32,
    // q_sample: elements per batch item
    per_sample: u32,
    // axpbz / dropout scale: out = a·x + b·e + sigma·z
    a: f32,
    b: f32,
    sigma: f32,
    // q_sample: number of timesteps T (t is clamped to [0, T-1])
    steps: u32,
    // sampler_update: x0 = s_x·x − s_e·e (clamped to [−1, 1] when clip ≠ 0);
    // out = c_x·x + c_x0·x0 + c_e·e + c_prev·x0_prev + sigma·exp(sigma_v·v)·z
    s_x: f32,
    s_e: f32,
    clip: u32,
    c_x: f32,
    c_x0: f32,
    c_e: f32,
    c_prev: f32,
    // sampler_update: 1 when the model output has 2·C channels per item (e then v, learned
    // variance); per_sample is then C·H·W, the elements of x per item
    split: u32,
    sigma_v: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- Philox-4x32-10 -------------------------------------------------------------------------

// mul_wide(a, b): the full 64-bit product of two u32 as (hi, lo), from the wide prelude
// (shaders/wide/): from 16-bit halves in plain WGSL, one u64 multiply where SHADER_INT64 is on.

// philox(counter, key): Philox-4x32-10, from shaders/lib/philox.wgsl (appended by the engine).

// Philox block of launch element i (64-bit index offset + i, with carry).
fn block(i: u32) -> vec4<u32> {
    let lo = p.off_lo + i;
    let hi = p.off_hi + select(0u, 1u, lo < i);
    return philox(vec4<u32>(lo, hi, p.stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
}

// (w >> 8)·2^-24: a 24-bit integer times a power of two, exact on any adapter.
fn uniform_from_bits(w: u32) -> f32 {
    return f32(w >> 8u) * (1.0 / 16777216.0);
}

// ---- integer normal transform ---------------------------------------------------------------

// Q28 coefficients c0..c8 per octave (row k = octave p = 31 - k) of Phi^-1(1 - q), q = y·2^-33,
// as a polynomial in the Q31 position v of y in its octave. Same table as NORMAL_POLY in
// src/reference/random.rs. A private (not const) array: a dynamically indexed const array is
// copied into function memory on every access by some compilers (60x slower on llvmpipe).
var<private> NORMAL_POLY: array<i32, 288> = array<i32, 288>(
    85534103, -88488510, 4647323, -1928398, 320327, -102539, 24232, -9031, 2496,
    238141591, -62331968, 6420177, -1442170, 338251, -86563, 23405, -8094, 2337,
    353800856, -50118442, 6166577, -1303128, 312193, -79813, 21656, -7508, 2171,
    449881644, -42822019, 5724305, -1202178, 289640, -74248, 20192, -7017, 2032,
    533496111, -37881128, 5312113, -1119226, 270711, -69571, 18957, -6602, 1914,
    608335627, -34269749, 4957416, -1049518, 254686, -65595, 17904, -6247, 1813,
    676592162, -31490615, 4655641, -990201, 240966, -62176, 16996, -5939, 1725,
    739687018, -29271122, 4397613, -939150, 229090, -59206, 16204, -5670, 1648,
    798601046, -27448283, 4174942, -894741, 218704, -56599, 15507, -5432, 1580,
    854043404, -25918138, 3980868, -855730, 209537, -54290, 14888, -5221, 1520,
    906545701, -24610971, 3810109, -821157, 201379, -52230, 14335, -5031, 1465,
    956518138, -23478119, 3658559, -790274, 194063, -50378, 13836, -4860, 1416,
    1004284811, -22484489, 3523005, -762489, 187459, -48702, 13384, -4704, 1371,
    1050106886, -21604068, 3400908, -737334, 181461, -47176, 12972, -4562, 1330,
    1094198355, -20817128, 3290243, -714429, 175985, -45781, 12595, -4432, 1293,
    1136737086, -20108407, 3189376, -693466, 170962, -44499, 12247, -4312, 1258,
    1177872762, -19465896, 3096973, -674191, 166332, -43316, 11927, -4201, 1226,
    1217732725, -18879999, 3011939, -656394, 162049, -42220, 11629, -4097, 1196,
    1256426348, -18342949, 2933362, -639899, 158072, -41201, 11352, -4001, 1168,
    1294048377, -17848383, 2860478, -624557, 154367, -40251, 11094, -3912, 1142,
    1330681513, -17391035, 2792642, -610242, 150905, -39361, 10852, -3827, 1118,
    1366398438, -16966504, 2729307, -596847, 147661, -38527, 10624, -3748, 1095,
    1401263430, -16571080, 2670003, -584277, 144612, -37743, 10411, -3674, 1073,
    1435333651, -16201612, 2614325, -572454, 141741, -37004, 10209, -3604, 1053,
    1468660201, -15855404, 2561924, -561306, 139032, -36306, 10018, -3537, 1034,
    1501288974, -15530134, 2512494, -550773, 136469, -35645, 9838, -3474, 1016,
    1533261369, -15223790, 2465767, -540800, 134040, -35018, 9667, -3414, 998,
    1564614880, -14934621, 2421509, -531341, 131734, -34423, 9504, -3357, 982,
    1595383590, -14661091, 2379512, -522354, 129542, -33856, 9349, -3303, 966,
    1625598586, -14401851, 2339593, -513800, 127453, -33316, 9201, -3252, 951,
    1655288320, -14155707, 2301585, -505646, 125461, -32801, 9060, -3202, 937,
    1684478900, -13921601, 2265344, -497863, 123558, -32309, 8925, -3155, 923,
);

// floor(a·b / 2^31) for signed operands: the unsigned 64-bit product corrected to two's
// complement (subtract b·2^32 when a < 0 and a·2^32 when b < 0), then bits 31..62.
fn mul_q31(a: i32, b: i32) -> i32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let prod = mul_wide(ua, ub);
    let hi = prod.x - select(0u, ub, a < 0) - select(0u, ua, b < 0);
    return bitcast<i32>((hi << 1u) | (prod.y >> 31u));
}

// f32 bits of m·2^-28 (m > 0), rounded half-up to 24 significant bits; a carry out of the
// mantissa bumps the exponent because the implicit bit is added, not or-ed.
fn q28_to_f32_bits(m: u32) -> u32 {
    let lead = firstLeadingBit(m);
    var mant: u32;
    if (lead <= 23u) {
        mant = m << (23u - lead);
    } else {
        let sh = lead - 23u;
        mant = (m + (1u << (sh - 1u))) >> sh;
    }
    return ((lead + 98u) << 23u) + mant;
}

// z = Phi^-1((w + 1/2)·2^-32): sign from the top bit, magnitude from the octave polynomial.
fn normal_from_bits(w: u32) -> f32 {
    let neg = (w >> 31u) == 0u;
    let x = select(~w, w, neg) & 0x7fffffffu;
    let y = 2u * x + 1u;
    let lead = firstLeadingBit(y);
    let m = y << (31u - lead);
    let v = bitcast<i32>((m << 1u) - 0x80000000u);
    let base = (31u - lead) * 9u;
    var acc = NORMAL_POLY[base + 8u];
    for (var k = 7i; k >= 0i; k--) {
        acc = NORMAL_POLY[base + u32(k)] + mul_q31(acc, v);
    }
    if (acc <= 0) {
        return 0.0;
    }
    let sign = select(0u, 0x80000000u, neg);
    return bitcast<f32>(sign | q28_to_f32_bits(bitcast<u32>(acc)));
}

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// ---- fills ----------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read_write> fill_out: array<f32>;

@compute @workgroup_size(256)
fn uniform_fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    fill_out[i] = uniform_from_bits(block(i).x);
}

@compute @workgroup_size(256)
fn normal_fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    fill_out[i] = normal_from_bits(block(i).y);
}

// ---- dropout (forward and backward are the same map: the mask is regenerated) ---------------

@group(0) @binding(1) var<storage, read> drop_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> drop_out: array<f32>;

// out = x·a where uniform >= p (a = 1/(1-p)), else 0. One invocation per 4 elements: element
// 4j + e takes word e of block j, so one Philox block (the bulk of the work) serves four.
@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let j = linear_index(wg, nwg, lid);
    if (j * 4u >= p.n) { return; }
    let keep = (block(j) >> vec4<u32>(8u)) >= vec4<u32>(p.thresh);
    for (var e = 0u; e < 4u; e++) {
        let i = 4u * j + e;
        if (i < p.n) {
            drop_out[i] = select(0.0, drop_x[i] * p.a, keep[e]);
        }
    }
}

@group(0) @binding(1) var<storage, read> drop_x4: array<W4>;
@group(0) @binding(2) var<storage, read_write> drop_out4: array<W4>;

// dropout for n % 4 == 0: block j's four words mask elements 4j..4j+3, read and written as one
// vec4 (on llvmpipe a vec4 access costs 2.5 scalar ones, not 4).
@compute @workgroup_size(256)
fn dropout4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let j = linear_index(wg, nwg, lid);
    if (j * 4u >= p.n) { return; }
    let keep = (block(j) >> vec4<u32>(8u)) >= vec4<u32>(p.thresh);
    drop_out4[j] = st4(select(vec4(0.0), ld4(drop_x4[j]) * p.a, keep));
}

// ---- DDPM forward process -------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> qs_x0: array<f32>;
@group(0) @binding(2) var<storage, read> qs_t: array<f32>;
@group(0) @binding(3) var<storage, read> qs_sab: array<f32>;
@group(0) @binding(4) var<storage, read> qs_somab: array<f32>;
@group(0) @binding(5) var<storage, read_write> qs_xt: array<f32>;
@group(0) @binding(6) var<storage, read_write> qs_eps: array<f32>;

// eps = N(0,1) at element i; x_t = sqrt(abar_t)·x0 + sqrt(1 - abar_t)·eps with t = t[i / per_sample]
@compute @workgroup_size(256)
fn q_sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let t = u32(clamp(qs_t[i / p.per_sample], 0.0, f32(p.steps - 1u)));
    let eps = normal_from_bits(block(i).y);
    qs_eps[i] = eps;
    qs_xt[i] = qs_sab[t] * qs_x0[i] + qs_somab[t] * eps;
}

// The same x_t (same noise), and in place of eps the v target of Salimans & Ho (2022):
// v = sqrt(abar_t)·eps - sqrt(1 - abar_t)·x0.
@compute @workgroup_size(256)
fn q_sample_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let t = u32(clamp(qs_t[i / p.per_sample], 0.0, f32(p.steps - 1u)));
    let eps = normal_from_bits(block(i).y);
    let x0 = qs_x0[i];
    qs_eps[i] = qs_sab[t] * eps - qs_somab[t] * x0;
    qs_xt[i] = qs_sab[t] * x0 + qs_somab[t] * eps;
}

// ---- fused sampler update -------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> ax_x: array<f32>;
@group(0) @binding(2) var<storage, read> ax_e: array<f32>;
@group(0) @binding(3) var<storage, read_write> ax_out: array<f32>;

// out = a·x + b·e + sigma·z, z = N(0,1) at element i (not drawn when sigma == 0)
@compute @workgroup_size(256)
fn axpbz(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    var y = p.a * ax_x[i] + p.b * ax_e[i];
    if (p.sigma != 0.0) {
        y += p.sigma * normal_from_bits(block(i).y);
    }
    ax_out[i] = y;
}

// ---- one step of any sampler (DDPM, DDIM, DPM-Solver++) ------------------------------------

@group(0) @binding(1) var<storage, read> su_x: array<f32>;
@group(0) @binding(2) var<storage, read> su_e: array<f32>;
@group(0) @binding(3) var<storage, read> su_prev: array<f32>;
@group(0) @binding(4) var<storage, read_write> su_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> su_x0: array<f32>;

// Index of element i's model output: with a split output (learned variance, 2·C channels per
// item) the first C channels of each item; the variance channel v is per_sample further on.
fn sampler_e_index(i: u32) -> u32 {
    if (p.split == 0u) {
        return i;
    }
    let b = i / p.per_sample;
    return i + b * p.per_sample;
}

// Noise scale of element i: sigma, or with a learned variance sigma·exp(sigma_v·v), i.e.
// exp(½(frac·log beta + (1 - frac)·log beta~)) with frac = (v + 1)/2 folded into the two
// coefficients on the host (Nichol & Dhariwal 2021, eq. 15).
fn sampler_sigma(i: u32) -> f32 {
    if (p.split == 0u || p.sigma_v == 0.0) {
        return p.sigma;
    }
    return p.sigma * exp(p.sigma_v * su_e[sampler_e_index(i) + p.per_sample]);
}

// Predicted x0 = s_x·x - s_e·e, optionally clipped (for an eps model (x_t - sqrt(1 -
// abar_t)·eps) / sqrt(abar_t); x0 and v models only change s_x, s_e, and the eps they imply is
// linear in x and e, folded into c_x and c_e); then the sampler's linear combination of x_t,
// x0, eps and the previous x0. Returns the noiseless part of x_{t-1} and writes x0.
fn sampler_mean(i: u32) -> f32 {
    let x = su_x[i];
    let e = su_e[sampler_e_index(i)];
    var x0 = p.s_x * x - p.s_e * e;
    if (p.clip != 0u) {
        x0 = clamp(x0, -1.0, 1.0);
    }
    var y = p.c_x * x + p.c_x0 * x0 + p.c_e * e;
    if (p.c_prev != 0.0) {
        y += p.c_prev * su_prev[i];
    }
    su_x0[i] = x0;
    return y;
}

// x_{t-1} = mean + sigma·z with z drawn in-line (none when sigma = 0).
@compute @workgroup_size(256)
fn sampler_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    var y = sampler_mean(i);
    if (p.sigma != 0.0) {
        y += sampler_sigma(i) * normal_from_bits(block(i).y);
    }
    su_out[i] = y;
}

@group(0) @binding(6) var<storage, read> su_noise: array<f32>;

// x_{t-1} = mean + sigma·noise[i] with the noise given (parity with another implementation's
// random stream, e.g. diffusers' recorded randn_tensor).
@compute @workgroup_size(256)
fn sampler_update_noise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    su_out[i] = sampler_mean(i) + sampler_sigma(i) * su_noise[i];
}
