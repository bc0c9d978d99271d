//! CPU twin of the counter-based generator in `shaders/random.wgsl`, bit for bit, plus an exact
//! f64 normal quantile (AS241) that the tests measure the integer normal transform against.
//!
//! # Stream layout
//! Element `index` of stream `stream` under `seed` is one Philox-4x32-10 block:
//! counter = `[index_lo, index_hi, stream, 0]`, key = `[seed_lo, seed_hi]`, giving words
//! `r = [r0, r1, r2, r3]`.
//! - uniform = `(r0 >> 8) · 2⁻²⁴`, in [0, 1) on a 2⁻²⁴ grid (exact in f32);
//! - normal = `normal_from_bits(r1)` (below).
//!
//! # Integer normal transform
//! `w` (32 bits) stands for u = (w + ½)·2⁻³², and z = Φ⁻¹(u). By symmetry z = ±Φ⁻¹(1 − q) with
//! q = (x + ½)·2⁻³² ≤ ½, where x is the low 31 bits of `w` (complemented when the top bit is set,
//! which also gives the sign). Write y = 2x + 1 (odd, < 2³²), so q = y·2⁻³³; the octave
//! 2ᵖ ≤ y < 2ᵖ⁺¹ (p = leading bit) is one of 32 intervals q ∈ [2ᵖ⁻³³, 2ᵖ⁻³²), and on each the
//! magnitude Φ⁻¹(1 − q) is a degree-8 polynomial in the position v ∈ [−1, 1) of y inside its octave
//! (Chebyshev interpolant, coefficients rounded to Q28 in [`NORMAL_POLY`]). Horner's rule runs in
//! Q28 × Q31 fixed point (products floor-shifted by 31, the same on every machine), and the Q28
//! magnitude is rounded to a 24-bit mantissa and assembled into f32 bits by integer operations.
//! No floating-point operation is involved, so GPU and CPU agree to the bit.
//!
//! Accuracy (tested in `tests/kernels/random.rs` against [`normal_quantile`] at ~1.3M words
//! covering both tails, the centre and a stride through all of u32): error ≤ 5e-8 + half an f32
//! ulp of z; measured maximum 2.5e-7 (at |z| ≈ 6, nearly all of it the final f32 rounding).
//! |z| ≤ 6.24 (q ≥ 2⁻³³). The map is odd (z(!w) = −z(w)) and monotone except for wiggles of the
//! fixed-point error size (~1e-8) between neighbouring words near z = 0.

/// Philox-4x32 round multipliers and Weyl key increments (Salmon et al., SC'11).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox-4x32 with 10 rounds (Random123's `philox4x32`).
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(PHILOX_W0);
            k1 = k1.wrapping_add(PHILOX_W1);
        }
        let p0 = PHILOX_M0 as u64 * c0 as u64;
        let p1 = PHILOX_M1 as u64 * c2 as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    [c0, c1, c2, c3]
}

/// The Philox block for element `index` of `stream` under `seed` (see the module docs).
pub fn block(seed: u64, stream: u32, index: u64) -> [u32; 4] {
    philox4x32_10(
        [index as u32, (index >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// Uniform in [0, 1) on a 2⁻²⁴ grid from the top 24 bits of word 0.
pub fn uniform(seed: u64, stream: u32, index: u64) -> f32 {
    uniform_from_bits(block(seed, stream, index)[0])
}

/// `(w >> 8) · 2⁻²⁴` (exact).
pub fn uniform_from_bits(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Standard normal from word 1 (integer-only transform, module docs).
pub fn normal(seed: u64, stream: u32, index: u64) -> f32 {
    normal_from_bits(block(seed, stream, index)[1])
}

/// Q28 coefficients: row k (octave p = 31 − k) holds c0..c8 of Φ⁻¹(1 − q) as a polynomial in
/// v ∈ [−1, 1), where y = 2ᵖ·(1.5 + v/2). Duplicated verbatim in `shaders/random.wgsl`.
#[rustfmt::skip]
pub const NORMAL_POLY: [i32; 288] = [
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
];

/// Degree of each octave's polynomial.
const NORMAL_DEG: usize = 8;

/// floor(a·b / 2³¹) for a Q28 value and a Q31 value (|result| < 2³¹ for our operands).
fn mul_q31(a: i32, b: i32) -> i32 {
    ((a as i64 * b as i64) >> 31) as i32
}

/// f32 bits of `m`·2⁻²⁸ (m > 0), rounded half-up to 24 significant bits.
fn q28_to_f32_bits(m: u32) -> u32 {
    let lead = 31 - m.leading_zeros(); // m ∈ [2^lead, 2^(lead+1))
    let mant = if lead <= 23 {
        m << (23 - lead)
    } else {
        let sh = lead - 23;
        (m + (1 << (sh - 1))) >> sh // ∈ [2^23, 2^24]; 2^24 carries into the exponent below
    };
    // value = mant·2^(lead−23−28): biased exponent lead − 28 + 127, minus one for the implicit
    // bit that `mant` still carries.
    ((lead + 98) << 23) + mant
}

/// Standard normal quantile of u = (w + ½)·2⁻³², computed in integer arithmetic only.
pub fn normal_from_bits(w: u32) -> f32 {
    let neg = w >> 31 == 0;
    let x = if neg { w } else { !w } & 0x7FFF_FFFF;
    let y = 2 * x + 1;
    let p = 31 - y.leading_zeros();
    let m = y << (31 - p); // Q31 mantissa in [1, 2)
    let v = (m << 1).wrapping_sub(1 << 31) as i32; // Q31 position in [−1, 1)
    let row = &NORMAL_POLY[(31 - p as usize) * (NORMAL_DEG + 1)..][..NORMAL_DEG + 1];
    let mut acc = row[NORMAL_DEG];
    for &c in row[..NORMAL_DEG].iter().rev() {
        acc = c + mul_q31(acc, v);
    }
    if acc <= 0 {
        return 0.0;
    }
    let sign = if neg { 1u32 << 31 } else { 0 };
    f32::from_bits(sign | q28_to_f32_bits(acc as u32))
}

/// `n` uniforms: element i is [`uniform`] at index `offset + i`.
pub fn rand_uniform(n: usize, seed: u64, stream: u32, offset: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| uniform(seed, stream, offset + i) as f64)
        .collect()
}

/// `n` normals: element i is [`normal`] at index `offset + i`.
pub fn randn(n: usize, seed: u64, stream: u32, offset: u64) -> Vec<f64> {
    (0..n as u64).map(|i| normal(seed, stream, offset + i) as f64).collect()
}

fn poly(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

/// Exact (relative error ~1e-16) standard normal quantile Φ⁻¹(p), p ∈ (0, 1): Wichura's AS241
/// PPND16.
#[allow(clippy::excessive_precision)] // AS241 coefficients as published
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 8] = [
        3.387_132_872_796_366_608e0,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083_0e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061_0e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561_0e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34e0,
        4.630_337_846_156_545_295_90e0,
        5.769_497_221_460_691_405_50e0,
        3.647_848_324_763_204_605_04e0,
        1.270_458_252_452_368_382_58e0,
        2.417_807_251_774_506_117_70e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_40e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87e0,
        1.676_384_830_183_803_849_40e0,
        6.897_673_349_851_000_045_50e-1,
        1.481_039_764_274_800_745_90e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946_00e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_20e0,
        5.463_784_911_164_114_369_90e0,
        1.784_826_539_917_291_335_80e0,
        2.965_605_718_285_048_912_30e-1,
        2.653_218_952_657_612_309_30e-2,
        1.242_660_947_388_078_438_60e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_90e-1,
        1.369_298_809_227_358_053_10e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591_00e-4,
        1.846_318_317_510_054_681_80e-5,
        1.421_511_758_316_445_888_70e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = (-(if q < 0.0 { p } else { 1.0 - p }).ln()).sqrt();
    let z = if r <= 5.0 {
        poly(&C, r - 1.6) / poly(&D, r - 1.6)
    } else {
        poly(&E, r - 5.0) / poly(&F, r - 5.0)
    };
    if q < 0.0 {
        -z
    } else {
        z
    }
}
