// Tessera linear attention (favor+, 32 features, causal), spec 01ca0c2a18be91f9d49e18d5c332432f
// batch 1, heads 2/2, seq 100x100, dim 16/16, bhsd, f32; chunks of 32 keys

const SEQ_Q = 100u;
const SEQ_KV = 100u;
const HEADS_Q = 2u;
const HEADS_KV = 2u;
const GROUP = 1u;
const F = 32u;
const DV = 16u;
const E = 544u; // one state: F × DV sums, then F normalisers
const CHUNK = 32u;
const CHUNKS = 4u;
const W = 0u;
const KF = 512u;
const KC = 6912u;
const STATES = 7112u;
const CMAX = 11464u;
const PREFIX = 11472u;
const PMAX = 16912u;
const Q_MUL = 0.5f;
const K_MUL = 0.5f;
const MASKED = -3.0e38f;

@group(0) @binding(0) var<storage, read> q_buf: array<f32>;
@group(0) @binding(1) var<storage, read> k_buf: array<f32>;
@group(0) @binding(2) var<storage, read> v_buf: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;
@group(0) @binding(5) var<storage, read_write> work: array<f32>;

var<private> phi: array<f32, 32>;

fn key_features(row: u32, mul: f32) -> f32 {
  var sq = 0.0f;
  for (var d = 0u; d < 16u; d++) { let x = mul * (k_buf[row + d]); sq += x * x; }
  var mx = -3.0e38f;
  for (var r = 0u; r < 32u; r++) {
    var p = 0.0f;
    for (var d = 0u; d < 16u; d++) { p += work[W + r * 16u + d] * (mul * (k_buf[row + d])); }
    phi[r] = p;
    mx = max(mx, p);
  }
  for (var r = 0u; r < 32u; r++) { phi[r] = exp(phi[r] - mx) * 0.1767766922712326f; }
  return mx - 0.5f * sq;
}
fn query_features(row: u32, mul: f32) -> f32 {
  var sq = 0.0f;
  for (var d = 0u; d < 16u; d++) { let x = mul * (q_buf[row + d]); sq += x * x; }
  var mx = -3.0e38f;
  for (var r = 0u; r < 32u; r++) {
    var p = 0.0f;
    for (var d = 0u; d < 16u; d++) { p += work[W + r * 16u + d] * (mul * (q_buf[row + d])); }
    phi[r] = p;
    mx = max(mx, p);
  }
  for (var r = 0u; r < 32u; r++) { phi[r] = exp(phi[r] - mx) * 0.1767766922712326f; }
  return mx - 0.5f * sq;
}

// Pass 1: one thread per key: φ̃(k_j) and c_j.
@compute @workgroup_size(64)
fn key_pass(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x;
  let bhk = g.y;
  if (j >= SEQ_KV) { return; }
  let b = bhk / HEADS_KV;
  let hk = bhk % HEADS_KV;
  let c = key_features(b * 3200u + hk * 1600u + j * 16u, K_MUL);
  let at = bhk * SEQ_KV + j;
  for (var f = 0u; f < F; f++) { work[KF + at * F + f] = phi[f]; }
  work[KC + at] = c;
}

// Pass 2: one workgroup per (chunk, batch, KV head): the chunk's sums, scaled to its own maximum.
@compute @workgroup_size(64)
fn chunk_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let chunk = wg.x;
  let bhk = wg.y;
  let b = bhk / HEADS_KV;
  let hk = bhk % HEADS_KV;
  let j0 = chunk * CHUNK;
  let j1 = min(j0 + CHUNK, SEQ_KV);
  var mx = MASKED;
  for (var j = j0; j < j1; j++) { mx = max(mx, work[KC + bhk * SEQ_KV + j]); }
  let state = STATES + (bhk * CHUNKS + chunk) * E;
  for (var e = tid; e < E; e += 64u) {
    let f = e / (DV + 1u);
    let d = e % (DV + 1u);
    var acc = 0.0f;
    for (var j = j0; j < j1; j++) {
      let at = bhk * SEQ_KV + j;
      let w = work[KF + at * F + f] * exp(work[KC + at] - mx);
      let x = select(1.0f, (v_buf[b * 3200u + hk * 1600u + j * 16u + min(d, DV - 1u)]), d < DV);
      acc += w * x;
    }
    work[state + e] = acc;
  }
  if (tid == 0u) { work[CMAX + bhk * CHUNKS + chunk] = mx; }
}

// Pass 3: prefix sums over chunks; PREFIX[c] holds chunks < c, PREFIX[CHUNKS] all of them.
@compute @workgroup_size(64)
fn prefix_pass(@builtin(global_invocation_id) g: vec3<u32>) {
  let e = g.x;
  let bhk = g.y;
  if (e >= E) { return; }
  var mx = MASKED;
  var acc = 0.0f;
  for (var c = 0u; c <= CHUNKS; c++) {
    work[PREFIX + (bhk * (CHUNKS + 1u) + c) * E + e] = acc;
    if (e == 0u) { work[PMAX + bhk * (CHUNKS + 1u) + c] = mx; }
    if (c == CHUNKS) { break; }
    let cm = work[CMAX + bhk * CHUNKS + c];
    let nm = max(mx, cm);
    acc = acc * exp(mx - nm) + work[STATES + (bhk * CHUNKS + c) * E + e] * exp(cm - nm);
    mx = nm;
  }
}

// Pass 4: one thread per query row.
@compute @workgroup_size(64)
fn query_pass(@builtin(global_invocation_id) g: vec3<u32>) {
  let qi = g.x;
  let bh = g.y;
  if (qi >= SEQ_Q) { return; }
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let hk = h / GROUP;
  let bhk = b * HEADS_KV + hk;
  let cq = query_features(b * 3200u + h * 1600u + qi * 16u, Q_MUL);
  // Whole chunks before this row's chunk come from the prefix; its own keys up to qi one by one.
  let chunk = min(qi / CHUNK, CHUNKS);
  let j0 = chunk * CHUNK;
  let j1 = min(qi + 1u, SEQ_KV);
  let pm = work[PMAX + bhk * (CHUNKS + 1u) + chunk];
  var mx = pm;
  for (var j = j0; j < j1; j++) { mx = max(mx, work[KC + bhk * SEQ_KV + j]); }
  let pw = exp(pm - mx);
  let pre = PREFIX + (bhk * (CHUNKS + 1u) + chunk) * E;
  var den = 0.0f;
  for (var f = 0u; f < F; f++) { den += phi[f] * work[pre + f * (DV + 1u) + DV]; }
  den *= pw;
  var kws = array<f32, 32>(); // this row's weight on each key of its own chunk
  for (var j = j0; j < j1; j++) {
    let at = bhk * SEQ_KV + j;
    var kw = 0.0f;
    for (var f = 0u; f < F; f++) { kw += phi[f] * work[KF + at * F + f]; }
    kws[j - j0] = kw * exp(work[KC + at] - mx);
    den += kws[j - j0];
  }
  let ok = den > 0.0f;
  let inv = select(0.0f, 1.0f / den, ok);
  let o_row = b * 3200u + h * 1600u + qi * 16u;
  for (var d = 0u; d < DV; d++) {
    var num = 0.0f;
    for (var f = 0u; f < F; f++) { num += phi[f] * work[pre + f * (DV + 1u) + d]; }
    num *= pw;
    for (var j = j0; j < j1; j++) {
      num += kws[j - j0] * (v_buf[b * 3200u + hk * 1600u + j * 16u + d]);
    }
    out_buf[o_row + d] = num * inv;
  }
  lse_buf[bh * SEQ_Q + qi] = select(0xff800000u, bitcast<u32>(log(den) + cq + mx), ok);
}
