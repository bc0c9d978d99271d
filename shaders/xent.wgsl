// Softmax cross-entropy over the rows of logits [rows, k] with integer class labels (stored as
// f32, as the engine stores every label tensor):
//   loss[r]      = logsumexp(z_r) − z_r[y_r]
//   dlogits[r,j] = scale · (softmax(z_r)_j − [j = y_r])
// One invocation per row: the class count of a classifier is small (tens), and a row's max and
// Σexp are needed before any output. The max is subtracted before exp, so logits of any
// magnitude are finite. A label that is not an integer in [0, k) gives loss NaN (the trainer's
// non-finite check then stops the run) and a zero gradient row.

struct Params {
    rows: u32,
    k: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(64)
fn xent_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.k;
    var m = logits[base];
    for (var j = 1u; j < p.k; j++) {
        m = max(m, logits[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.k; j++) {
        s += exp(logits[base + j] - m);
    }
    let yf = labels[r];
    let valid = yf >= 0.0 && yf < f32(p.k) && floor(yf) == yf;
    let y = select(p.k, u32(max(yf, 0.0)), valid);
    if (!valid) {
        // NaN without a constant expression that naga would reject: 0/0 of runtime values.
        let zero = s - s;
        loss[r] = zero / zero;
        for (var j = 0u; j < p.k; j++) {
            dlogits[base + j] = 0.0;
        }
        return;
    }
    loss[r] = log(s) + m - logits[base + y];
    let inv = 1.0 / s;
    for (var j = 0u; j < p.k; j++) {
        let sm = exp(logits[base + j] - m) * inv;
        dlogits[base + j] = p.scale * (sm - select(0.0, 1.0, j == y));
    }
}
