"""Stage-2 train step throughput (pairs/s) and model FLOPs utilisation, JAX vs a PyTorch reference.

Run (CPU, the embedded small config):   python benchmarks/train_step.py
Run (one GPU, paper-sized towers):      python benchmarks/train_step.py --preset=vit_b16_bert_base --context=77 \
                                            --batch=256 --steps=20
                                        python benchmarks/train_step.py --preset=vit_b16_bert_base --context=256 \
                                            --batch=128 --steps=20

Both sides run the same model and loss on the same batch, starting from the same weights (JAX params are
exported into the open_clip-layout torch reference of phenolip_jax/convert/torch_reference.py):
ViT image tower + linear head, BERT text tower + MLP head, frozen teacher text tower of the same shape,
L = (L_it + 0.3 L_kd) / 1.3 with identity targets (hierarchical soft targets off on both sides), AdamW
with global-norm clipping. Dropout is 0 on both sides, so the first-step losses must agree (printed).
JAX: the jitted, sharded train step of phenolip_jax/train (fp32 on CPU, bf16 compute on GPU).
PyTorch: eager fp32 on CPU (bf16 autocast on GPU), then torch.compile of the same step, in the same run.
Threads: both sides get --threads (default: every CPU): XLA's intra-op pool through XLA_FLAGS, torch's through
set_num_threads. Load: the 1-minute load average is recorded before and after every side; a JAX/torch ratio
is reportable only when every load it rests on is at most --max_load (default 1.7, for this 2-core machine):
above it the figures still print, but the ratio is marked NOT REPORTABLE (contention slows torch's threads
more than XLA's: the 3.0x once quoted in RESULTS.md was measured at load 4.5).

FLOPs: `analytic` counts matmul/attention FLOPs of the model (3x forward for the trained towers, 1x for
the teacher), the standard MFU numerator; the compiled step's XLA `cost_analysis()` count (which also
includes the optimizer and elementwise work) is printed next to it. Peak: on CPU the best fp32 matmul
rate measured here (so CPU MFU is relative to an attainable peak); on GPU the dense bf16 peak of the
device (table below, or --peak_tflops).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

KD_WEIGHT = 0.3

MINILM_L6 = dict(vocab_size=30522, width=384, depth=6, num_heads=12, mlp_dim=1536, max_position_embeddings=512)
BERT_BASE = dict(vocab_size=30522, width=768, depth=12, num_heads=12, mlp_dim=3072, max_position_embeddings=512)
PRESETS: dict[str, dict[str, Any]] = {
    # configs/stage2.py (demo): ViT 64 px / patch 8 / width 192 x 4, MiniLM-L6 text, context 32, batch 64.
    "small": dict(variant="demo", text=MINILM_L6),
    # configs/stage2.py:biomedclip: ViT-B/16 224 px + BERT-base (PubMedBERT's shape), embed 512.
    "vit_b16_bert_base": dict(variant="biomedclip", text=BERT_BASE),
}
# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity).
GPU_PEAK = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
            "A10": 125e12, "V100": 125e12}


def load_stage2_config(variant: str):
    """configs/stage2.py:get_config(variant)."""
    from phenolip_jax.config_lib import load_config

    return load_config("stage2", variant)


def build(preset: str, context: int | None, batch: int | None, dtype: str):
    """(config, TwoTower fields) of the benchmarked model."""
    spec = PRESETS[preset]
    cfg = load_stage2_config(spec["variant"])
    cfg.data.max_len = context or cfg.data.max_len
    cfg.data.batch_size = batch or cfg.data.batch_size
    cfg.model.dtype = dtype
    cfg.loss.kd_weight = KD_WEIGHT
    cfg.loss.hierarchy.enabled = False
    cfg.optim.freeze_steps = 0
    cfg.optim.warmup_steps = 0
    cfg.optim.schedule = "constant"
    cfg.mesh.fsdp_min_size = 2**14
    embed = cfg.model.embed_dim
    text_bert = dict(spec["text"], max_position_embeddings=max(512, cfg.data.max_len), type_vocab_size=2,
                     layer_norm_eps=1e-12, initializer_range=0.02, hidden_dropout=0.0, attention_dropout=0.0,
                     pooling="cls")
    # open_clip's MLP text head has hidden (width + embed) // 2; the same here so weights export 1:1.
    image = dict(vit=dict(cfg.model.image), head="linear", embed_dim=embed, head_bias=False)
    text = dict(bert=text_bert, head="mlp", embed_dim=embed, head_hidden_dim=(text_bert["width"] + embed) // 2,
                head_bias=False)
    return cfg, dict(image_config=image, text_config=text)


def analytic_flops(fields: dict, batch: int, context: int) -> dict[str, float]:
    """Model FLOPs per step: 2 per multiply-add of every matmul/attention product; train = 3 x forward."""
    vit = fields["image_config"]["vit"]
    w, m, p, s = vit["width"], vit["mlp_dim"], vit["patch_size"], vit["image_size"]
    n_patch = (s // p) ** 2
    t = n_patch + 1
    embed = fields["image_config"]["embed_dim"]
    image = 2 * n_patch * p * p * 3 * w + vit["depth"] * (2 * t * (4 * w * w + 2 * w * m) + 4 * t * t * w) + 2 * w * embed
    b = fields["text_config"]["bert"]
    bw, bm, hid = b["width"], b["mlp_dim"], fields["text_config"]["head_hidden_dim"]
    text = b["depth"] * (2 * context * (4 * bw * bw + 2 * bw * bm) + 4 * context * context * bw)
    text += 2 * (bw * hid + hid * embed)
    loss = 2 * 2 * batch * embed  # per example: a row of v t^T and of t k^T
    student = batch * (image + text + loss)
    teacher = batch * text
    return dict(forward=student, step=3 * student + teacher)


def measure_cpu_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s of one jitted [n, n] @ [n, n] on this machine's default device."""
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make_batch(cfg, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images and full-length token ids (no padding, so both sides see the same mask)."""
    r = np.random.default_rng(seed)
    s, length = cfg.data.image_size, cfg.data.max_len
    ids = r.integers(1000, 30000, size=(batch, length)).astype(np.int32)
    ids[:, 0] = 101  # [CLS]
    return dict(image=r.normal(size=(batch, s, s, 3)).astype(np.float32), input_ids=ids,
                attention_mask=np.ones_like(ids))


def load_average() -> float:
    """The 1-minute load average (runnable processes, averaged), recorded with every figure."""
    return os.getloadavg()[0]


def xla_thread_flags(threads: int) -> str:
    """XLA_FLAGS giving the CPU backend's intra-op pool `threads` threads (read when the backend starts)."""
    return f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"


def time_steps(run_step: Callable[[], float], steps: int) -> tuple[float, float]:
    """(seconds per step after one warm-up step, first step's loss)."""
    first_loss = run_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        run_step()
    return (time.perf_counter() - t0) / steps, first_loss


def jax_side(cfg, fields: dict, batch_np: dict, steps: int) -> dict[str, Any]:
    """Builds the sharded stage-2 train step, compiles it, times it; also returns the init params."""
    from phenolip_jax.models import layers, two_tower
    from phenolip_jax.train import build as build_lib, mesh as mesh_lib, objectives

    dtype = layers.canonical_dtype(cfg.model.dtype)
    model = two_tower.TwoTower(image_config=fields["image_config"], text_config=fields["text_config"],
                               logit_scale_init=math.log(cfg.model.logit_scale_init), dtype=dtype)
    teacher_model = two_tower.TextTower(**fields["text_config"], dtype=dtype)
    s = cfg.data.image_size
    params = jax.device_get(jax.jit(model.init)(jax.random.key(cfg.seed), jnp.zeros((1, s, s, 3)),
                                                jnp.zeros((1, 8), jnp.int32))["params"])
    teacher = {"params": {"text": jax.tree.map(lambda x: x * 0.5, params["text"])}}
    # The run's own builder (train/build.py): optimizer, shardings, the non-finite guard, the jitted step.
    sharded = build_lib.build_step(cfg, mesh_lib.make_mesh(-1, 1),
                                   objectives.stage2_objective(model, teacher_model, cfg), params, teacher)
    state = sharded.make_state(params, teacher, jax.random.key_data(jax.random.key(cfg.seed)))
    jitted, bsh = sharded.jitted, mesh_lib.batch_sharding(sharded.mesh)
    t0 = time.perf_counter()
    batch = {k: jax.device_put(v, bsh) for k, v in batch_np.items()}
    compiled = jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost.get("flops", float("nan"))) * len(jax.devices()) if cost else float("nan")
    mem = compiled.memory_analysis()
    holder = {"state": state}

    def run_step() -> float:
        holder["state"], metrics = compiled(holder["state"], batch)
        return float(metrics["loss"])  # a host transfer: waits for the step

    per_step, first_loss = time_steps(run_step, steps)
    return dict(params=params, teacher=teacher, per_step=per_step, first_loss=first_loss, compile_s=compile_s,
                xla_flops=xla_flops, temp_gib=(mem.temp_size_in_bytes / 2**30) if mem else float("nan"))


def torch_side(cfg, fields: dict, params: Any, teacher: Any, batch_np: dict, steps: int, compile_mode: bool,
               device: str) -> dict[str, Any]:
    """The same model/loss/optimizer in PyTorch (torch_reference + transformers.BertModel), timed."""
    import torch
    import torch.nn.functional as F

    from phenolip_jax.convert import open_clip as oc
    from phenolip_jax.convert import torch_reference as tr

    bert_cfg = oc.bert_config_from_fields(fields["text_config"]["bert"])
    model = tr.build_from_open_clip_config(oc.open_clip_config(fields, bert_cfg, context_length=cfg.data.max_len))
    state = oc.two_tower_to_state_dict(fields, params)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    teacher_state = oc.two_tower_to_state_dict(fields, dict(params, text=teacher["params"]["text"]))
    from transformers import BertConfig

    teacher_model = tr.HFTextTower(BertConfig(**{k: v for k, v in bert_cfg.items() if k != "model_type"}),
                                   fields["text_config"]["embed_dim"], "mlp")
    teacher_model.load_state_dict({k[len("text."):]: torch.from_numpy(np.array(v)) for k, v in teacher_state.items()
                                   if k.startswith("text.")}, strict=True)
    model.to(device).train()
    teacher_model.to(device).eval().requires_grad_(False)
    o = cfg.optim
    # The JAX optimizer's decay rule (train/optimizer.py): only matmul/conv kernels decay; embeddings, norms,
    # biases and the logit scale do not.
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    groups = [{"params": [p for p in model.parameters() if id(p) in kernels], "weight_decay": o.weight_decay},
              {"params": [p for p in model.parameters() if id(p) not in kernels], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    images = torch.from_numpy(batch_np["image"]).permute(0, 3, 1, 2).contiguous().to(device)
    ids = torch.from_numpy(batch_np["input_ids"]).long().to(device)
    labels = torch.arange(ids.shape[0], device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    max_log_scale = math.log(cfg.max_logit_scale)

    def clip_loss(logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    def loss_fn(images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        with autocast:
            v = F.normalize(model.visual(images).float(), dim=-1)
            t = F.normalize(model.text(ids).float(), dim=-1)
            with torch.no_grad():
                k = F.normalize(teacher_model(ids).float(), dim=-1)
        scale = model.logit_scale.exp()
        return (clip_loss(scale * v @ t.T) + KD_WEIGHT * clip_loss(scale * t @ k.T)) / (1 + KD_WEIGHT)

    fn = torch.compile(loss_fn) if compile_mode else loss_fn

    def run_step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = fn(images, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=max_log_scale)
        return float(loss.detach())  # a host transfer: waits for the step

    t0 = time.perf_counter()
    per_step, first_loss = time_steps(run_step, steps)
    return dict(per_step=per_step, first_loss=first_loss, first_step_s=time.perf_counter() - t0 - per_step * steps)


def main() -> None:
    """Runs both sides and prints one line per measurement plus a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--context", type=int, default=None, help="text tokens (default: the config's max_len)")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's batch_size)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--peak_tflops", type=float, default=None, help="device peak (default: table / measured)")
    p.add_argument("--no_torch", action="store_true")
    p.add_argument("--no_torch_compile", action="store_true")
    p.add_argument("--json", default="", help="also write the summary here")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for each side")
    p.add_argument("--max_load", type=float, default=1.7,
                   help="a ratio measured at a higher 1-minute load average is marked not reportable")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity") and args.threads < len(os.sched_getaffinity(0)):
        # Both sides on the same `threads` cores, whatever size each runtime gives its pools.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    # Before the first jax call: XLA reads XLA_FLAGS when its backend starts.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_thread_flags(args.threads)).strip()

    backend = jax.default_backend()
    on_gpu = backend == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    cfg, fields = build(args.preset, args.context, args.batch, dtype)
    batch_size, context = cfg.data.batch_size, cfg.data.max_len
    batch_np = make_batch(cfg, batch_size)
    flops = analytic_flops(fields, batch_size, context)
    kind = jax.devices()[0].device_kind
    if args.peak_tflops:
        peak, peak_src = args.peak_tflops * 1e12, "--peak_tflops"
    elif on_gpu:
        peak = next((v for k, v in sorted(GPU_PEAK.items(), key=lambda kv: -len(kv[0])) if k in kind), float("nan"))
        peak_src = f"bf16 dense datasheet peak of {kind}"
    else:
        peak, peak_src = measure_cpu_peak(), "best measured fp32 1024^3 matmul (jax)"
    import torch
    import transformers

    info = dict(preset=args.preset, batch=batch_size, context=context, image_size=cfg.data.image_size,
                dtype=dtype, devices=f"{len(jax.devices())} x {kind}", backend=backend,
                machine=f"{platform.machine()} {os.cpu_count()} cpus", jax=jax.__version__, torch=torch.__version__,
                transformers=transformers.__version__, load_avg=load_average(), threads=args.threads,
                max_load=args.max_load,
                analytic_gflops_per_step=flops["step"] / 1e9, peak_tflops=peak / 1e12, peak_source=peak_src)
    print(json.dumps(info))
    load0 = load_average()
    res = jax_side(cfg, fields, batch_np, args.steps)
    results: dict[str, Any] = {}

    def report(name: str, per_step: float, first_loss: float, load_before: float) -> None:
        pairs = batch_size / per_step
        mfu = flops["step"] / per_step / peak
        load = max(load_before, load_average())  # the worse of the loads at the start and the end of the side
        results[name] = dict(s_per_step=per_step, pairs_per_s=pairs, mfu=mfu, first_loss=first_loss, load_avg=load)
        print(f"{name:>14}: {per_step * 1e3:8.1f} ms/step  {pairs:8.1f} pairs/s  MFU {100 * mfu:5.1f}%  "
              f"first-step loss {first_loss:.6f}  load average {load:.2f}", flush=True)

    print(f"jax: compiled in {res['compile_s']:.1f}s; XLA cost_analysis {res['xla_flops'] / 1e9:.1f} GFLOP/step vs "
          f"analytic {flops['step'] / 1e9:.1f}; temps {res['temp_gib']:.2f} GiB/device")
    report("jax", res["per_step"], res["first_loss"], load0)
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
        load1 = load_average()
        eager = torch_side(cfg, fields, res["params"], res["teacher"], batch_np, args.steps, False, device)
        report("torch eager", eager["per_step"], eager["first_loss"], load1)
        if not args.no_torch_compile:
            load2 = load_average()
            try:
                comp = torch_side(cfg, fields, res["params"], res["teacher"], batch_np, args.steps, True, device)
                print(f"torch.compile: first step (compile + run) {comp['first_step_s']:.1f}s")
                report("torch compile", comp["per_step"], comp["first_loss"], load2)
            except Exception as e:  # noqa: BLE001 - a missing compiler toolchain is a result, not a crash
                print(f"torch.compile failed: {type(e).__name__}: {str(e)[:300]}")
        for name in [n for n in results if n != "jax"]:
            ratio = results["jax"]["pairs_per_s"] / results[name]["pairs_per_s"]
            dloss = abs(results["jax"]["first_loss"] - results[name]["first_loss"])
            load = max(results["jax"]["load_avg"], results[name]["load_avg"])
            ok = on_gpu or load <= args.max_load
            results[name]["ratio_reportable"] = ok
            verdict = "" if ok else f"  NOT REPORTABLE (load average {load:.2f} > --max_load {args.max_load})"
            print(f"jax / {name}: {ratio:.2f}x pairs/s at {args.threads} threads each, load average {load:.2f}; "
                  f"|first-step loss difference| {dloss:.2e}{verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info, results=results), f, indent=2)


if __name__ == "__main__":
    main()
