// Tessera program: select (top-k KV blocks by q·k, 1 local block(s) forced)
// batch 2, heads 4/2, dim 8, blocks 16x8, 3 Q blocks x 6 KV blocks

const ITEMS = 24u;
const HEADS_Q = 4u;
const HEADS_KV = 2u;
const GROUP = 2u;
const HEAD_DIM = 8u;
const BLOCK_Q = 16u;
const BLOCK_KV = 8u;
const NUM_Q_BLOCKS = 3u;
const NUM_KV_BLOCKS = 6u;
const LOCAL = 1u;
const CAND_BATCHES = 1u;
const CAND_HEADS = 1u;
const CAND_ENTRIES = 4u;
const SEL_ENTRIES = 25u;
const MAX_CANDIDATES = 6u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> candidates: array<u32>;
@group(0) @binding(3) var<storage, read_write> selection: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

// KV block j meets key positions [qb·BLOCK_Q − (LOCAL−1)·BLOCK_KV, (qb+1)·BLOCK_Q).
fn is_local(j: u32, qb: u32) -> bool {
  let lo = i32(qb * BLOCK_Q) - (i32(LOCAL) - 1) * i32(BLOCK_KV);
  let hi = i32((qb + 1u) * BLOCK_Q);
  let start = i32(j * BLOCK_KV);
  let end = i32((j + 1u) * BLOCK_KV);
  return LOCAL > 0u && start < hi && end > lo;
}

fn candidate(e: u32) -> u32 {
  return candidates[CAND_ENTRIES + e] & 0x7fffffffu;
}

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
  let qb = idx % NUM_Q_BLOCKS;
  let bh = idx / NUM_Q_BLOCKS;
  let b = bh / HEADS_Q;
  let h = bh % HEADS_Q;
  let slice = select(0u, b, CAND_BATCHES > 1u) * CAND_HEADS + select(0u, h, CAND_HEADS > 1u);
  let c0 = candidates[slice * NUM_Q_BLOCKS + qb];
  let n = candidates[slice * NUM_Q_BLOCKS + qb + 1u] - c0;
  let w0 = selection[idx];
  let keep = selection[idx + 1u] - w0;
  let q0 = idx * HEAD_DIM;
  let k0 = (b * HEADS_KV + h / GROUP) * NUM_KV_BLOCKS * HEAD_DIM;
  let s0 = idx * MAX_CANDIDATES;

  // Count the forced blocks; score the others.
  var forced = 0u;
  for (var e = 0u; e < n; e++) {
    let j = candidate(c0 + e);
    if (is_local(j, qb)) {
      forced += 1u;
    } else {
      var dot = 0.0f;
      for (var d = 0u; d < HEAD_DIM; d++) {
        dot = fma(q[q0 + d], k[k0 + j * HEAD_DIM + d], dot);
      }
      scores[s0 + e] = dot;
    }
  }
  let slots = select(0u, keep - forced, keep > forced);

  // The slots-th best of the others by (score desc, block asc): one pass per slot, each
  // taking the best candidate ranked after the previous pick.
  var last_s = 0.0f;
  var last_e = 0u;
  var have = false;
  for (var t = 0u; t < slots; t++) {
    var best_e = n;
    var best_s = 0.0f;
    for (var e = 0u; e < n; e++) {
      if (is_local(candidate(c0 + e), qb)) {
        continue;
      }
      let s = scores[s0 + e];
      let after = !have || s < last_s || (s == last_s && e > last_e);
      if (after && (best_e == n || s > best_s)) {
        best_e = e;
        best_s = s;
      }
    }
    if (best_e == n) {
      break;
    }
    last_s = best_s;
    last_e = best_e;
    have = true;
  }

  // Kept: the forced blocks and the others ranked up to the last pick, in ascending order.
  var w = 0u;
  for (var e = 0u; e < n && w < keep; e++) {
    let j = candidate(c0 + e);
    let s = scores[s0 + e];
    let ranked = have && (s > last_s || (s == last_s && e <= last_e));
    if (is_local(j, qb) || ranked) {
      selection[SEL_ENTRIES + w0 + w] = j;
      w += 1u;
    }
  }
}
