// Tessera program: pool (softmax weights), blocks of 8 rows
// x [2, 4, 45, 8] -> out [2, 4, 6, 8]

const ITEMS = 384u;
const HEADS = 4u;
const ROWS = 45u;
const COLS = 8u;
const OUT_ROWS = 6u;
const BLOCK = 8u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * groups.x + wg.x) * 64u + lid;
  if (idx >= ITEMS) {
    return;
  }
  let c = idx % COLS;
  let j = (idx / COLS) % OUT_ROWS;
  let bh = idx / (COLS * OUT_ROWS);
  let start = j * BLOCK;
  let n = min(BLOCK, ROWS - start);
  let base = (bh * ROWS + start) * COLS + c;
  let w0 = (bh % HEADS) * BLOCK;
  var mx = -3.0e38f;
  for (var t = 0u; t < n; t++) {
    mx = max(mx, weights[w0 + t]);
  }
  var den = 0.0f;
  var acc = 0.0f;
  for (var t = 0u; t < n; t++) {
    let e = exp(weights[w0 + t] - mx);
    den += e;
    acc += e * x[base + t * COLS];
  }
  out[idx] = acc / den;
}
