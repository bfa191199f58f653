// Tessera program: merge (2 branches by log-sum-exp)
// 360 rows of 8; a row empty in every branch gets out 0 and lse -inf

const ITEMS = 360u;
const COLS = 8u;
const BRANCHES = 2u;
const NEG_INF_BITS = 0xff800000u;

@group(0) @binding(0) var<storage, read> outs: array<f32>;
@group(0) @binding(1) var<storage, read> lses: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<u32>;

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
  var mx = -3.0e38f;
  var any = false;
  for (var br = 0u; br < BRANCHES; br++) {
    let bits = lses[br * ITEMS + idx];
    if (bits != NEG_INF_BITS) {
      any = true;
      mx = max(mx, bitcast<f32>(bits));
    }
  }
  var sum = 0.0f;
  for (var br = 0u; br < BRANCHES; br++) {
    let bits = lses[br * ITEMS + idx];
    if (bits != NEG_INF_BITS) {
      sum += exp(bitcast<f32>(bits) - mx);
    }
  }
  let total = mx + log(sum);
  for (var c = 0u; c < COLS; c++) {
    out[idx * COLS + c] = 0.0f;
  }
  for (var br = 0u; br < BRANCHES; br++) {
    let bits = lses[br * ITEMS + idx];
    if (bits != NEG_INF_BITS) {
      let w = exp(bitcast<f32>(bits) - total);
      for (var c = 0u; c < COLS; c++) {
        let o = idx * COLS + c;
        out[o] = fma(w, outs[(br * ITEMS + idx) * COLS + c], out[o]);
      }
    }
  }
  lse[idx] = select(NEG_INF_BITS, bitcast<u32>(total), any);
}
