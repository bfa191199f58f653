#!/usr/bin/env python3
"""PyTorch peers for the @tessera/cuda H100 bench (SDPA and FlexAttention).

Usage: python3 peers.py PLAN.json RESULT.json

PLAN.json (written by bench/h100/run.ts) lists tasks:
  {"kind": "sdpa", "key", "B", "H", "N", "D", "causal", "repeat", "warmup", "sets"}
      times torch SDPA (bf16) with CUDA events on fresh random inputs, rotating `sets` input sets.
  {"kind": "flex", "key", "B", "H", "N", "D", "mask": {...}, "repeat", "warmup", "sets"}
      times FlexAttention (torch.compile'd) with a block mask built outside the timed region.
  {"kind": "check", "key", "dir", "B", "H", "HKV", "N", "D", "mask": {...}, "mod": {...}}
      reads q/k/v (float32, BHSD, values already rounded to bf16) and Tessera's out/lse from
      DIR/*.bin, runs FlexAttention in bf16 on the same inputs, and reports relative errors.
Masks: {"type": "none"} | {"type": "causal"} | {"type": "window", "size", "causal"} |
       {"type": "blocks", "block", "file"} (kv-block lists, int32: for each q block its count,
       then its indices; every listed block fully unmasked, e.g. BigBird).
Mods:  {"type": "none"} | {"type": "alibi", "slopes": [...]} | {"type": "softcap", "cap"}.
Writes one JSON object to RESULT.json (rewritten after each task); a failing task is reported, not fatal.
"""
import json
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

torch.backends.cuda.matmul.allow_tf32 = False
DEV = "cuda"
flex = torch.compile(flex_attention, dynamic=False)


def median_ms(fn, warmup, repeat, sets):
    for i in range(warmup):
        fn(i % sets)
    torch.cuda.synchronize()
    times = []
    for i in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % sets)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times)), times


def mask_mod_of(mask):
    t = mask["type"]
    if t == "causal":
        return lambda b, h, q, kv: q >= kv
    if t == "window":
        w = int(mask["size"])
        if mask.get("causal", True):
            return lambda b, h, q, kv: (q >= kv) & (q - kv < w)
        return lambda b, h, q, kv: (q - kv).abs() < w
    return None


def block_mask_of(mask, B, H, N):
    t = mask["type"]
    if t == "none":
        return None
    if t == "blocks":
        # A block-granular mask (e.g. BigBird) given as Tessera's kv-block lists: a lookup table
        # as mask_mod, so create_block_mask finds exactly these blocks, all of them full.
        block = int(mask["block"])
        raw = np.fromfile(mask["file"], dtype=np.int32)
        nqb = (N + block - 1) // block
        table = np.zeros((nqb, nqb), dtype=bool)
        at = 0
        for i in range(nqb):
            c = int(raw[at])
            table[i, raw[at + 1 : at + 1 + c]] = True
            at += 1 + c
        tab = torch.from_numpy(table).to(DEV)
        return create_block_mask(
            lambda b, h, q, kv: tab[q // block, kv // block], B=None, H=None, Q_LEN=N, KV_LEN=N, device=DEV, BLOCK_SIZE=block
        )
    return create_block_mask(mask_mod_of(mask), B=None, H=None, Q_LEN=N, KV_LEN=N, device=DEV, BLOCK_SIZE=128)


def score_mod_of(mod):
    t = mod["type"] if mod else "none"
    if t == "alibi":
        slopes = torch.tensor(mod["slopes"], dtype=torch.float32, device=DEV)
        return lambda score, b, h, q, kv: score - slopes[h] * (q - kv).abs()
    if t == "softcap":
        cap = float(mod["cap"])
        return lambda score, b, h, q, kv: torch.tanh(score / cap) * cap
    return None


def rand_sets(task, sets):
    shape = (task["B"], task["H"], task["N"], task["D"])
    return [
        tuple(torch.randn(shape, dtype=torch.bfloat16, device=DEV) for _ in range(3)) for _ in range(sets)
    ]


def run_sdpa(task):
    sets = rand_sets(task, task["sets"])
    causal = bool(task["causal"])
    ms, times = median_ms(
        lambda i: F.scaled_dot_product_attention(*sets[i], is_causal=causal), task["warmup"], task["repeat"], len(sets)
    )
    return {"median_ms": ms, "times_ms": times}


def run_flex(task):
    sets = rand_sets(task, task["sets"])
    t0 = time.perf_counter()
    bm = block_mask_of(task["mask"], task["B"], task["H"], task["N"])
    torch.cuda.synchronize()
    build_ms = (time.perf_counter() - t0) * 1e3
    ms, times = median_ms(lambda i: flex(*sets[i], block_mask=bm), task["warmup"], task["repeat"], len(sets))
    return {"median_ms": ms, "times_ms": times, "block_mask_ms": build_ms}


def load(dirname, name, shape):
    return torch.from_numpy(np.fromfile(f"{dirname}/{name}.bin", dtype=np.float32).reshape(shape)).to(DEV)


def run_check(task):
    B, H, HKV, N, D = task["B"], task["H"], task["HKV"], task["N"], task["D"]
    d = task["dir"]
    q = load(d, "q", (B, H, N, D)).to(torch.bfloat16)
    k = load(d, "k", (B, HKV, N, D)).to(torch.bfloat16)
    v = load(d, "v", (B, HKV, N, D)).to(torch.bfloat16)
    ours = load(d, "out", (B, H, N, D))
    ours_lse = load(d, "lse", (B, H, N))
    bm = block_mask_of(task["mask"], B, H, N)
    out, lse = flex(
        q, k, v, score_mod=score_mod_of(task.get("mod")), block_mask=bm, enable_gqa=HKV != H, return_lse=True
    )
    out = out.float()
    rel = (torch.linalg.vector_norm(ours - out) / torch.linalg.vector_norm(out)).item()
    finite = torch.isfinite(lse) & torch.isfinite(ours_lse)
    lse_err = ((ours_lse - lse.float()).abs() / lse.float().abs().clamp(min=1))[finite].max().item()
    masked_mismatch = int((torch.isfinite(lse) != torch.isfinite(ours_lse)).sum().item())
    return {"rel_err": rel, "lse_err": lse_err, "masked_row_mismatches": masked_mismatch}


def main():
    plan = json.load(open(sys.argv[1]))
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "tasks": {}}
    for task in plan["tasks"]:
        t0 = time.perf_counter()
        try:
            fn = {"sdpa": run_sdpa, "flex": run_flex, "check": run_check}[task["kind"]]
            r = fn(task)
        except Exception as e:  # one failing peer must not hide the others
            r = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
        r["wall_s"] = time.perf_counter() - t0
        result["tasks"][task["key"]] = r
        print(f"[peers] {task['key']}: {json.dumps({k: v for k, v in r.items() if k != 'times_ms' and k != 'trace'})}", flush=True)
        torch.cuda.empty_cache()
        with open(sys.argv[2], "w") as f:  # after every task, so a run cut short keeps what it measured
            json.dump(result, f)


if __name__ == "__main__":
    main()
