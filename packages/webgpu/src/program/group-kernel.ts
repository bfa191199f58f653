/**
 * WGSL of the `group` step, two passes. Route: one invocation per row finds the cluster with the
 * largest `x_t · centroid_c` (f32, ties to the lower c). Sort: one workgroup per (batch, head)
 * slice runs a stable counting sort of its rows by cluster: a histogram with workgroup atomics,
 * an exclusive scan of it into each cluster's first place, then the rows in tiles of one row per
 * thread, in row order, where a row's place is its cluster's next place plus the number of rows
 * of the same cluster before it in the tile. Every row's rank and the row at every place are
 * written; O(N·(C + T)) work per slice, T the workgroup size.
 */
import { emitGridKernel, GRID_THREADS } from './grid.js';

export interface GroupKernelShape {
  readonly batch: number;
  readonly heads: number;
  readonly rows: number;
  readonly cols: number;
  readonly clusters: number;
}

/** cluster[b,h,t] = argmax_c x[b,h,t] · centroids[h,c] (ties to the lower c). */
export function emitRoute(s: GroupKernelShape): string {
  return emitGridKernel({
    title: [
      `Tessera program: group, routing (each row to the nearest of ${s.clusters} centroids by dot product)`,
      `x [${s.batch}, ${s.heads}, ${s.rows}, ${s.cols}], centroids [1, ${s.heads}, ${s.clusters}, ${s.cols}] -> cluster per row`,
    ],
    items: s.batch * s.heads * s.rows,
    consts: [
      ['HEADS', s.heads],
      ['ROWS', s.rows],
      ['COLS', s.cols],
      ['CLUSTERS', s.clusters],
    ],
    bindings: [
      'var<storage, read> x: array<f32>;',
      'var<storage, read> centroids: array<f32>;',
      'var<storage, read_write> cluster: array<u32>;',
    ],
    body: [
      'let h = (idx / ROWS) % HEADS;',
      'let x0 = idx * COLS;',
      'var best = 0u;',
      'var best_s = 0.0f;',
      'for (var c = 0u; c < CLUSTERS; c++) {',
      '  let c0 = (h * CLUSTERS + c) * COLS;',
      '  var s = 0.0f;',
      '  for (var d = 0u; d < COLS; d++) {',
      '    s = fma(x[x0 + d], centroids[c0 + d], s);',
      '  }',
      '  if (c == 0u || s > best_s) {',
      '    best = c;',
      '    best_s = s;',
      '  }',
      '}',
      'cluster[idx] = best;',
    ],
  });
}

/** Workgroup memory of the sort pass, in bytes (the histogram, the cluster starts, one tile). */
export const sortWorkgroupBytes = (clusters: number): number => (2 * clusters + GRID_THREADS) * 4;

/**
 * rank[b,h,t] = place of row t in the order by (cluster, t); order[b,h,rank] = t. `grouping` holds
 * the ranks of every slice, then the orders at word SLICES·ROWS.
 */
export function emitGroupSort(s: GroupKernelShape): string {
  const slices = s.batch * s.heads;
  const T = GRID_THREADS;
  return [
    `// Tessera program: group, stable counting sort of each (batch, head) slice's rows by cluster`,
    `// ${slices} slices of ${s.rows} rows, ${s.clusters} clusters; one workgroup per slice, tiles of ${T} rows`,
    '',
    `const SLICES = ${slices}u;`,
    `const ROWS = ${s.rows}u;`,
    `const CLUSTERS = ${s.clusters}u;`,
    `const T = ${T}u;`,
    '',
    '@group(0) @binding(0) var<storage, read> cluster: array<u32>;',
    '@group(0) @binding(1) var<storage, read_write> grouping: array<u32>;',
    '',
    'var<workgroup> count: array<atomic<u32>, CLUSTERS>;',
    '// The place the next row of each cluster takes.',
    'var<workgroup> next: array<u32, CLUSTERS>;',
    'var<workgroup> tile: array<u32, T>;',
    '',
    `@compute @workgroup_size(${T})`,
    'fn main(',
    '  @builtin(workgroup_id) wg: vec3<u32>,',
    '  @builtin(num_workgroups) groups: vec3<u32>,',
    '  @builtin(local_invocation_index) lid: u32,',
    ') {',
    '  let slice = wg.y * groups.x + wg.x;',
    '  if (slice >= SLICES) {',
    '    return; // the whole workgroup: uniform',
    '  }',
    '  let base = slice * ROWS;',
    '  for (var c = lid; c < CLUSTERS; c += T) {',
    '    atomicStore(&count[c], 0u);',
    '  }',
    '  workgroupBarrier();',
    '  for (var t = lid; t < ROWS; t += T) {',
    '    atomicAdd(&count[cluster[base + t]], 1u);',
    '  }',
    '  workgroupBarrier();',
    '  // Exclusive scan of the histogram: the first place of each cluster.',
    '  if (lid == 0u) {',
    '    var run = 0u;',
    '    for (var c = 0u; c < CLUSTERS; c++) {',
    '      next[c] = run;',
    '      run += atomicLoad(&count[c]);',
    '    }',
    '  }',
    '  workgroupBarrier();',
    '  // Tiles of T rows in row order; within a tile, rows of one cluster keep their row order.',
    '  for (var t0 = 0u; t0 < ROWS; t0 += T) {',
    '    let t = t0 + lid;',
    '    let live = t < ROWS;',
    '    let n = min(T, ROWS - t0);',
    '    var c = CLUSTERS; // no cluster: a thread past the last row',
    '    if (live) {',
    '      c = cluster[base + t];',
    '    }',
    '    tile[lid] = c;',
    '    workgroupBarrier();',
    '    var before = 0u;',
    '    var same = 0u;',
    '    for (var u = 0u; u < n; u++) {',
    '      let hit = select(0u, 1u, tile[u] == c);',
    '      same += hit;',
    '      before += select(0u, hit, u < lid);',
    '    }',
    '    if (live) {',
    '      let r = next[c] + before;',
    '      grouping[base + t] = r;',
    '      grouping[SLICES * ROWS + base + r] = t;',
    '    }',
    '    workgroupBarrier();',
    "    // The cluster's last row in the tile moves its next place past the tile's rows.",
    '    if (live && before + 1u == same) {',
    '      next[c] += same;',
    '    }',
    '    workgroupBarrier();',
    '  }',
    '}',
    '',
  ].join('\n');
}
