#!/usr/bin/env python
"""Training benchmark: jupyter-ft against a plain TRL ``SFTTrainer`` script, in one run.

Same model (the built-in SmolLM2-135M-Instruct), same rows (``demo:support_tickets``), same
hyperparameters (lr, schedule, LoRA r16/alpha32/dropout 0.05 on all linear layers, NF4 with double
quantization, compute dtype from ``jupyter_ft.models.select_compute_dtype``), same number of optimizer
steps, same seed. It measures

* training throughput: non-padding tokens per second of training (model loading, data preparation,
  evaluation and saving excluded) for jupyter-ft, plain TRL and (optionally) a tuned TRL script;
* model-FLOP utilisation against a matmul peak measured on this machine;
* memory of the base model loaded NF4 vs fp32 (footprint, RSS, one training step);
* the main thread's latency while jupyter-ft trains in its background thread, as a notebook cell sees it.

Each measurement runs in a fresh subprocess so that memory peaks, thread pools and allocator state do
not leak from one variant into the next. Prints a markdown table and writes JSON.

    python benchmarks/bench_training.py                 # full run (~30 steps per variant)
    python benchmarks/bench_training.py --quick         # smoke check, a handful of steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

# --model (or JUPYTER_FT_BENCH_MODEL, which the variants' subprocesses inherit) swaps in another model: on a
# GPU machine without the wheel, benchmarks/shaped_model.py builds one with SmolLM2's shapes.
MODEL = os.environ.get("JUPYTER_FT_BENCH_MODEL", "smollm2-135m-instruct")
DATA = "demo:support_tickets"
SEED = 42
LEARNING_RATE = 2e-4
WARMUP = 0.05  # ratio, as jupyter-ft's default
SCHEDULER = "cosine"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
VARIANTS = ("jupyter_ft", "trl", "trl_tuned")
TARGET_RATIO = 0.95  # jupyter-ft tokens/s at least 95% of plain TRL
TARGET_P95_MS = 250.0  # main-thread p95 latency while training


# =========================================================================== helpers
def _rss_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, in MiB."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        import resource

        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _percentiles(samples_ms: list[float]) -> dict[str, Any]:
    if not samples_ms:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(samples_ms)

    def pct(q: float) -> float:
        return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]

    return {"n": len(s), "p50_ms": round(pct(50), 3), "p95_ms": round(pct(95), 3), "p99_ms": round(pct(99), 3),
            "max_ms": round(s[-1], 3)}


def _set_dtype_env(dtype: str) -> None:
    if dtype != "auto":
        os.environ["JUPYTER_FT_DTYPE"] = dtype


def _compute_dtype(device: str) -> Any:
    from jupyter_ft import models

    return models.select_compute_dtype(device)


def _rows() -> list[dict[str, Any]]:
    """The demo rows as chat turns, exactly as jupyter-ft builds them (alpaca -> user/assistant)."""
    from jupyter_ft.config import DataConfig
    from jupyter_ft.data import detect_format, load_rows, to_messages

    ds, _ = load_rows(DATA)
    fmt, columns, _ = detect_format(ds.column_names, DataConfig(source=DATA), DATA)
    return [to_messages(row, fmt, columns) for row in ds]


def _step_rate(points: list[tuple[int, float, int]], skip_first: bool) -> dict[str, Any]:
    """Throughput from (step, seconds since train begin, cumulative non-padding tokens) points.

    ``overall`` runs from the train-begin callback to the last step; ``steady`` drops the first
    optimizer step (thread-pool / kernel warm-up, lazy allocations) when there are at least 3 steps.
    """
    points = sorted(points)
    if not points:
        return {}
    last_step, last_t, last_tok = points[-1]
    out: dict[str, Any] = {"steps": last_step, "train_seconds": last_t, "tokens": last_tok,
                           "overall_tokens_per_s": last_tok / last_t if last_t > 0 else None}
    first = points[0]
    if skip_first and len(points) >= 3 and first[0] == 1:
        dt, dtok = last_t - first[1], last_tok - first[2]
        out["steady_tokens_per_s"] = dtok / dt if dt > 0 else None
        out["steady_steps"] = last_step - first[0]
        out["first_step_seconds"] = first[1]
    else:
        out["steady_tokens_per_s"] = out["overall_tokens_per_s"]
        out["steady_steps"] = last_step
    out["tokens_per_s"] = out["steady_tokens_per_s"]
    # Per-step view: robust to a few steps slowed down by other processes on the same cores.
    prev_t, prev_tok, prev_step = 0.0, 0, 0
    per_step: list[tuple[float, float]] = []  # (seconds per step, tokens/s) of each logged interval
    for step, t, tok in points:
        if step > prev_step and t > prev_t:
            per_step.append(((t - prev_t) / (step - prev_step), (tok - prev_tok) / (t - prev_t)))
        prev_t, prev_tok, prev_step = t, tok, step
    steady = per_step[1:] if skip_first and len(per_step) >= 3 else per_step
    if steady:
        secs = sorted(x for x, _ in steady)
        med = secs[len(secs) // 2]
        out["step_seconds"] = [round(x, 3) for x, _ in per_step]
        out["step_seconds_median"] = med
        out["step_seconds_max"] = secs[-1]
        out["median_step_tokens_per_s"] = sorted(r for _, r in steady)[len(steady) // 2]
        # A step 2x slower than the median almost always means another process took the cores.
        out["noisy"] = secs[-1] > 2 * med
    return out


# =========================================================================== matmul peak
def measure_matmul_peak(device: str, size: int = 2048, repeats: int = 10) -> dict[str, Any]:
    """Best-of-``repeats`` GFLOP/s of a square matmul, per dtype (fp32 always; bf16 when it works)."""
    import torch

    result: dict[str, Any] = {"size": size, "repeats": repeats, "device": device, "threads": torch.get_num_threads()}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        try:
            a = torch.randn(size, size, dtype=dtype, device=device)
            b = torch.randn(size, size, dtype=dtype, device=device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            for _ in range(2):  # warm-up
                a @ b
            sync()
            best = float("inf")
            inner = 10 if device == "cuda" else 1
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    a @ b
                sync()
                best = min(best, (time.perf_counter() - t0) / inner)
            result[name] = {"gflops": 2 * size**3 / best / 1e9, "best_seconds": best}
        except Exception as exc:  # noqa: BLE001 - a dtype the machine cannot do is reported, not fatal
            result[name] = {"gflops": None, "error": f"{type(exc).__name__}: {exc}"}
    if device == "cuda":
        result["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return result


def model_flops_per_token(model_path: str) -> dict[str, Any]:
    """Count the base model's matmul parameters on the meta device (no weights loaded)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    conf = AutoConfig.from_pretrained(model_path)
    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(conf)
    linear = head = 0
    for name, module in meta.named_modules():
        if isinstance(module, torch.nn.Linear):
            if name.split(".")[-1] in ("lm_head", "score"):
                head += module.weight.numel()
            else:
                linear += module.weight.numel()
    total = sum(p.numel() for p in meta.parameters())
    n = linear + head
    return {
        "n_params_total": total,
        "n_linear_non_embedding": linear,
        "n_lm_head": head,
        "n_matmul": n,
        "tie_word_embeddings": bool(getattr(conf, "tie_word_embeddings", False)),
        "flops_per_token": 6 * n,
        "flops_per_token_lora_4n": 4 * n,
        "formula": ("flops_per_token = 6 * N, N = parameters of every nn.Linear of the base model including the "
                    "LM head (it is a real matmul per token even when tied to the embeddings), embeddings excluded: "
                    "forward 2N + backward 4N, the standard MFU convention. Attention score FLOPs (~12*layers*seq*d, "
                    "about 2% here at these lengths), LoRA adapter FLOPs and gradient-checkpointing recomputation "
                    "are not counted. flops_per_token_lora_4n is the work LoRA actually needs (no weight gradients "
                    "for the frozen base: forward 2N + input gradients 2N). MFU = tokens/s * flops_per_token / "
                    "measured matmul peak."),
    }


# =========================================================================== child: jupyter-ft
class LatencyProbe:
    """What a notebook cell feels while training runs in the background thread.

    Every ``period`` seconds the main thread wakes up and runs a tiny fixed pure-Python workload (what a
    trivial cell does). A sample is the time from the intended wake-up to the end of that workload, minus
    the period: wake-up lateness (waiting for the GIL / a core) plus the workload's own run time.
    """

    def __init__(self, period: float = 0.01, work: int = 2000) -> None:
        self.period = period
        self.work = work
        self.samples: list[tuple[float, float]] = []  # (perf_counter at wake-up, latency ms)

    def _tick(self) -> None:
        t0 = time.perf_counter()
        time.sleep(self.period)
        acc = 0
        for i in range(self.work):
            acc += i * i
        t1 = time.perf_counter()
        self.samples.append((t0, (t1 - t0 - self.period) * 1000.0))

    def run_for(self, seconds: float) -> list[float]:
        start = len(self.samples)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self._tick()
        return [ms for _, ms in self.samples[start:]]

    def run_until(self, done: Any) -> None:
        while not done():
            self._tick()


def child_jupyter_ft(settings: dict[str, Any]) -> dict[str, Any]:
    import jupyter_ft
    from jupyter_ft import models

    steps, root = settings["steps"], settings["workdir"]
    device = models.select_device()
    dtype = _compute_dtype(device)
    config = {
        "model": {"name": MODEL},
        "data": {"source": DATA, "eval_split": 0.0, "max_length": settings["max_length"]},
        "lora": dict(LORA),
        "quantization": {"method": "4bit-nf4", "double_quant": True},
        "training": {"learning_rate": LEARNING_RATE, "max_steps": steps, "batch_size": settings["batch_size"],
                     "warmup": WARMUP, "scheduler": SCHEDULER, "seed": SEED, "logging_every": 1,
                     "eval_every": steps + 1, "save_every": steps + 1},
        "output": {"root": root, "name": "bench"},
    }
    probe = LatencyProbe()
    idle = probe.run_for(1.0)  # baseline: nothing training yet

    marks: dict[str, float] = {}

    def on_event(event: Any) -> None:  # runs in the training thread; must be cheap
        if event.kind == "progress":
            now_t = time.perf_counter()
            marks.setdefault("train_begin", now_t)
            if event.data.get("step") == event.data.get("max_steps"):
                marks.setdefault("train_end", now_t)

    t_start = time.perf_counter()
    # finetune() returns at once; subscribing right after cannot miss progress events, which only
    # start after model loading and data preparation in the worker thread.
    run = jupyter_ft.finetune(config, wait=False)
    run.subscribe(on_event)
    probe.run_until(lambda: run.done)
    t_end = time.perf_counter()
    run.wait()
    if run.status != "finished":
        raise RuntimeError(f"jupyter-ft run ended {run.status}: {run.error}")

    begin, end = marks.get("train_begin", t_end), marks.get("train_end", t_end)
    phases = {"setup": [], "training": [], "teardown": []}
    for t0, ms in probe.samples[len(idle):]:
        phases["setup" if t0 < begin else "training" if t0 < end else "teardown"].append(ms)
    latency = {"method": ("main thread: sleep(10 ms) then a fixed pure-Python loop of 2000 multiply-adds; sample = "
                          "time from intended wake-up to end of the loop, i.e. wake-up lateness + loop time"),
               "idle": _percentiles(idle),
               **{k: _percentiles(v) for k, v in phases.items()},
               "whole_run": _percentiles([ms for _, ms in probe.samples[len(idle):]])}

    points = [(h["step"], h["elapsed"], h["tokens_seen"]) for h in run.history if "tokens_seen" in h]
    result = _step_rate(points, skip_first=True)
    losses = [h["loss"] for h in run.history if "loss" in h]
    result.update({
        "variant": "jupyter_ft",
        "device": device,
        "compute_dtype": str(dtype).replace("torch.", ""),
        "wall_seconds_total": t_end - t_start,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "summary": {k: run.summary.get(k) for k in ("global_step", "tokens_seen", "mean_tokens_per_s",
                                                       "train_seconds", "final_train_loss")},
        "latency": latency,
        "settings_used": {
            "gradient_checkpointing": config["training"].get("gradient_checkpointing", False),
            "sampler": "group_by_length (jupyter-ft default without packing)",
            "padding": "dynamic, to the longest sequence of the batch",
            "loss": "completion only (prompt masked)",
            "logging_every": 1,
        },
        "rss": _rss_mib(),
    })
    return result


# =========================================================================== child: TRL
def _timer_callback() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Same clock as jupyter-ft's run callback: seconds since on_train_begin, read at each log."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.points: list[tuple[int, float, int]] = []
            self.losses: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                self.points.append((state.global_step, time.perf_counter() - self.t0, state.num_input_tokens_seen))
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def child_trl(settings: dict[str, Any], tuned: bool) -> dict[str, Any]:
    """A plain TRL QLoRA script, as the TRL docs write it; ``tuned`` turns off gradient checkpointing and
    groups batches by length (TRL's padding_free needs FlashAttention, so it is not used)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from jupyter_ft import models

    device = models.select_device()
    dtype = _compute_dtype(device)
    model_path = models.resolve_model(MODEL).path
    rows = _rows()
    # Conversational prompt-completion: TRL then trains on the completion only, like jupyter-ft.
    ds = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])

    extra: dict[str, Any] = {}
    if tuned:
        extra = {"gradient_checkpointing": False, "train_sampling_strategy": "group_by_length"}
    args = SFTConfig(
        output_dir=os.path.join(settings["workdir"], "trl_tuned" if tuned else "trl"),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=LEARNING_RATE,
        lr_scheduler_type=SCHEDULER,
        warmup_steps=WARMUP,
        max_length=settings["max_length"],
        seed=SEED,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        # precision follows the compute dtype both sides use (TRL's own default is bf16=True, which on a
        # CPU-only machine fails "Your setup doesn't support bf16/gpu" unless use_cpu=True is set too)
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        model_init_kwargs={"dtype": dtype},
        **extra,
    )
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dtype)
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    timer = _timer_callback()
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=ds, quantization_config=bnb,
                         peft_config=peft_config, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    result = _step_rate(timer.points, skip_first=True)
    result.update({
        "variant": "trl_tuned" if tuned else "trl",
        "device": device,
        "compute_dtype": str(dtype).replace("torch.", ""),
        "train_wall_seconds": wall,
        "train_runtime": trainer.state.log_history[-1].get("train_runtime") if trainer.state.log_history else None,
        "first_loss": timer.losses[0] if timer.losses else None,
        "final_loss": timer.losses[-1] if timer.losses else None,
        "settings_used": {
            "gradient_checkpointing": args.gradient_checkpointing,
            "sampler": args.train_sampling_strategy,
            "padding_free": args.padding_free,
            "packing": args.packing,
            "bf16": args.bf16,
            "completion_only_loss": trainer.completion_only_loss,
            "logging_steps": args.logging_steps,
            "adapter_dtype": str(next(p.dtype for p in trainer.model.parameters() if p.requires_grad)),
            "optim": str(args.optim),
        },
        "rss": _rss_mib(),
    })
    return result


# =========================================================================== child: memory
def child_memory(settings: dict[str, Any], kind: str) -> dict[str, Any]:
    """Load the base model NF4 or fp32 exactly as jupyter-ft does, then run one LoRA training step."""
    import torch

    from jupyter_ft import models
    from jupyter_ft.config import FineTuneConfig
    from jupyter_ft.data import prepare_data
    from jupyter_ft.engine.trainer import make_collator

    before = _rss_mib()
    device = models.select_device()
    if kind == "nf4":
        cfg = FineTuneConfig.from_dict({"quantization": {"method": "4bit-nf4", "double_quant": True},
                                        "lora": dict(LORA), "data": {"max_length": settings["max_length"],
                                                                     "eval_split": 0.0}})
        dtype = _compute_dtype(device)
    else:
        cfg = FineTuneConfig.from_dict({"quantization": {"method": "none"}, "lora": dict(LORA),
                                        "data": {"max_length": settings["max_length"], "eval_split": 0.0}})
        dtype = torch.float32
    resolved = models.resolve_model(MODEL)
    tokenizer = models.load_tokenizer(resolved)
    prepared = prepare_data(cfg.data, tokenizer, seed=SEED)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = models.load_base_model(cfg, resolved, device, dtype)
    footprint = base.get_memory_footprint()
    after_load = _rss_mib()
    cuda_after_load = torch.cuda.memory_allocated() if device == "cuda" else None

    model = models.apply_lora(base, cfg)
    model.train()
    collate = make_collator(tokenizer, packing=False)
    batch = collate([prepared.train[i] for i in range(min(settings["batch_size"], len(prepared.train)))])
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    after_step = _rss_mib()
    return {
        "kind": kind,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "footprint_mib": footprint / 2**20,
        "rss_before_load_mib": before.get("rss_mib"),
        "rss_after_load_mib": after_load.get("rss_mib"),
        "peak_rss_load_mib": after_load.get("peak_rss_mib"),
        "peak_rss_one_step_mib": after_step.get("peak_rss_mib"),
        "cuda_allocated_after_load_mib": cuda_after_load / 2**20 if cuda_after_load is not None else None,
        "cuda_peak_one_step_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "one_step_tokens": int(batch["attention_mask"].sum()),
        "one_step_loss": float(loss.detach()),
    }


# =========================================================================== orchestration
def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _children_cpu_seconds() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_child(mode: str, arg: str, settings: dict[str, Any], logdir: Path, timeout: float) -> dict[str, Any]:
    out = logdir / f"{mode}-{arg}.json"
    log = logdir / f"{mode}-{arg}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--_{mode}", arg, "--_result", str(out),
           "--_settings", json.dumps(settings)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy0, own0 = _busy_cpu_seconds(), _children_cpu_seconds()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=str(REPO))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    elapsed = time.perf_counter() - t0
    busy1, own1 = _busy_cpu_seconds(), _children_cpu_seconds()
    # CPU time other processes took while this child ran, as a share of the machine: > 10% means the
    # numbers of this child are not to be trusted (BLAS/OpenMP threads collapse when oversubscribed).
    others = None
    if busy0 is not None and busy1 is not None and elapsed > 0:
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (elapsed * (os.cpu_count() or 1))
    if rc == 0 and out.is_file():
        result = json.loads(out.read_text())
        result["process_seconds"] = elapsed
        result["loadavg_1min_before"] = load_before
        result["loadavg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        result["other_processes_cpu_share"] = others
        if others is not None and others > 0.10:
            result["contended"] = True
        return result
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    return {"error": f"{mode} {arg} failed (rc={rc})", "log_tail": tail, "process_seconds": elapsed}


def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        pass
    try:
        flags_line = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
        isa = sorted({f for f in flags_line.split() if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f"))})
    except OSError:
        isa = []
    info: dict[str, Any] = {
        "cpu_model": cpu or platform.processor(),
        "cpu_isa": isa,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        from jupyter_ft.runtime.environment import environment

        env = environment()
        info["versions"] = env.get("versions")
        info["git_commit"] = env.get("git_commit")
    except Exception as exc:  # noqa: BLE001
        info["versions_error"] = str(exc)
    return info


def _fmt(x: Any, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def render_table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    peak = report["matmul_peak"]
    flops = report["model_flops"]["flops_per_token"]
    fp32_peak = (peak.get("float32") or {}).get("gflops")
    bf16_peak = (peak.get("bfloat16") or {}).get("gflops")
    s = report["settings"]
    lines.append(f"## Training throughput ({s['steps']} steps, batch {s['batch_size']}, max_length {s['max_length']}, "
                 f"{report['machine']['device']}, compute dtype {report.get('compute_dtype')})")
    lines.append("")
    lines.append("| variant | tokens/s (steady) | tokens/s (overall) | tokens/s (median step) | vs plain TRL "
                 "| MFU (fp32 peak) | MFU (bf16 peak) | train s | tokens | final loss | notes |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in report["variants_run"]:
        r = report["variants"].get(name, {})
        if "error" in r:
            lines.append(f"| {name} | error | | | | | | | | | {r['error']} |")
            continue
        notes = r.get("notes", "")
        lines.append(
            f"| {name} | {_fmt(r.get('tokens_per_s'))} | {_fmt(r.get('overall_tokens_per_s'))} | "
            f"{_fmt(r.get('median_step_tokens_per_s'))} | {_fmt(r.get('ratio_vs_trl'), '.3f')} | {_fmt(r.get('mfu_fp32_peak'), '.2%')} | "
            f"{_fmt(r.get('mfu_bf16_peak'), '.2%')} | {_fmt(r.get('train_seconds'), '.1f')} | {r.get('tokens', '-')} | "
            f"{_fmt(r.get('final_loss'), '.3f')} | {notes} |")
    lines.append("")
    lines.append(f"Matmul peak ({peak['size']}x{peak['size']}, best of {peak['repeats']} at start and at end, "
                 f"{peak['threads']} threads): "
                 f"fp32 {_fmt(fp32_peak)} GFLOP/s, bf16 {_fmt(bf16_peak)} GFLOP/s. "
                 f"Model FLOPs/token = 6N = {flops / 1e6:.0f} MFLOP (N = {report['model_flops']['n_matmul'] / 1e6:.1f}M "
                 "matmul params incl. LM head).")
    relevant = "bf16" if report.get("compute_dtype") == "bfloat16" else "fp32"
    lines.append(f"The quantized layers compute in {report.get('compute_dtype')}, so the MFU ({relevant} peak) column "
                 "is the meaningful one; the other is for reference.")
    mem = report.get("memory") or {}
    if mem:
        lines.append("")
        lines.append("## Memory (base model loaded as jupyter-ft loads it; then one LoRA step)")
        lines.append("")
        lines.append("| weights | dtype | model footprint MiB | RSS after load MiB | peak RSS load MiB | "
                     "peak RSS 1 step MiB | CUDA peak 1 step MiB |")
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for kind in ("nf4", "fp32"):
            m = mem.get(kind, {})
            if "error" in m:
                lines.append(f"| {kind} | error | | | | | {m['error']} |")
                continue
            lines.append(f"| {kind} | {m.get('dtype')} | {_fmt(m.get('footprint_mib'))} | "
                         f"{_fmt(m.get('rss_after_load_mib'))} | {_fmt(m.get('peak_rss_load_mib'))} | "
                         f"{_fmt(m.get('peak_rss_one_step_mib'))} | {_fmt(m.get('cuda_peak_one_step_mib'))} |")
        if "nf4" in mem and "fp32" in mem and mem["nf4"].get("footprint_mib") and mem["fp32"].get("footprint_mib"):
            lines.append("")
            lines.append(f"NF4 / fp32 model footprint: {mem['nf4']['footprint_mib'] / mem['fp32']['footprint_mib']:.2f}")
    lat = (report["variants"].get("jupyter_ft") or {}).get("latency")
    if lat:
        lines.append("")
        lines.append("## Main-thread latency while jupyter-ft runs in the background (10 ms tick + tiny cell)")
        lines.append("")
        lines.append("| phase | samples | p50 ms | p95 ms | p99 ms | max ms |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for phase in ("idle", "setup", "training", "teardown", "whole_run"):
            p = lat.get(phase) or {}
            lines.append(f"| {phase} | {p.get('n', 0)} | {_fmt(p.get('p50_ms'), '.2f')} | {_fmt(p.get('p95_ms'), '.2f')} | "
                         f"{_fmt(p.get('p99_ms'), '.2f')} | {_fmt(p.get('max_ms'), '.2f')} |")
    t = report.get("targets") or {}
    if t:
        lines.append("")
        lines.append("## Targets (reported, not asserted)")
        lines.append("")
        for key, item in t.items():
            verdict = "n/a" if item.get("met") is None else ("met" if item["met"] else "NOT met")
            caveat = f" (untrustworthy: {item['caveat']})" if item.get("caveat") else ""
            lines.append(f"- {key}: {_fmt(item.get('value'), '.3f')} (target {item['target']}): {verdict}{caveat}")
    if any((report["variants"].get(v) or {}).get(k) for v in report["variants_run"] for k in ("noisy", "contended")):
        lines.append("")
        lines.append("_NOISY/CONTENDED rows: other processes used the cores during that variant (steps over 2x the "
                     "median, or >10% of the CPUs taken by others). Their numbers and ratios are not trustworthy; "
                     "rerun on an idle machine (or with --repeats 3)._")
    if report.get("quick"):
        lines.append("")
        lines.append("_--quick: too few steps for stable numbers; a smoke check only._")
    return "\n".join(lines)


def orchestrate(ns: argparse.Namespace) -> int:
    _set_dtype_env(ns.dtype)
    from jupyter_ft import models

    steps = ns.steps if ns.steps is not None else (4 if ns.quick else 30)
    device = models.select_device()
    variants = [v for v in ns.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    out_path = Path(ns.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    print("resolving the model (converts the GGUF once)...", flush=True)
    resolved = models.resolve_model(MODEL)
    dtype = models.select_compute_dtype(device)
    print(f"device {device}, compute dtype {dtype}; measuring the matmul peak...", flush=True)
    peak = measure_matmul_peak(device, size=ns.matmul_size)
    flops = model_flops_per_token(resolved.path)

    workdir = Path(tempfile.mkdtemp(prefix="jft-bench-"))
    settings = {"steps": steps, "batch_size": ns.batch_size, "max_length": ns.max_length, "workdir": str(workdir)}
    report: dict[str, Any] = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": ns.quick,
        "settings": {k: v for k, v in settings.items() if k != "workdir"} | {
            "model": MODEL, "model_path": resolved.path, "data": DATA, "rows": "all 480 (no eval split)",
            "learning_rate": LEARNING_RATE, "scheduler": SCHEDULER, "warmup_ratio": WARMUP, "seed": SEED,
            "lora": LORA, "quantization": "bitsandbytes NF4, double quant", "repeats": ns.repeats,
            "dtype_request": ns.dtype,
        },
        "compute_dtype": str(dtype).replace("torch.", ""),
        "machine": machine_info(device),
        "matmul_peak": peak,
        "model_flops": flops,
        "throughput_definition": ("non-padding input tokens (attention_mask sum, Trainer's "
                                  "include_num_input_tokens_seen='non_padding') per second of the training loop, "
                                  "clock started at on_train_begin and read at each step's log (logging every step in "
                                  "all variants). 'steady' excludes the first optimizer step (warm-up); 'overall' "
                                  "includes it; 'median_step' is the median over steps after the first of each step's "
                                  "tokens/s (robust to steps slowed by other processes). Model loading, tokenization, eval and saving are excluded."),
        "trl_defaults_that_matter": {
            "gradient_checkpointing": "TRL SFTConfig default True (jupyter-ft default False): recomputes the forward "
                                      "in backward, ~20-30% slower; kept in 'trl', turned off in 'trl_tuned'",
            "bf16": "TRL default True; set here to follow the compute dtype both sides use. On a CPU-only machine "
                    "TRL's default bf16=True raises ValueError unless use_cpu=True, so the script sets use_cpu",
            "sampler": "TRL/Trainer default 'random' (more padding per batch); jupyter-ft groups by length; "
                       "'trl_tuned' uses group_by_length",
            "padding": "both pad dynamically to the longest row in the batch; TRL padding_free needs FlashAttention",
            "qlora_adapter_dtype": "TRL casts LoRA weights to bf16 for quantized models; jupyter-ft (peft) keeps fp32",
            "loss": "TRL computes the loss with a fused, chunked LM head plus entropy/accuracy metrics each step; "
                    "jupyter-ft uses the model's standard loss (full logits)",
            "prepare_model_for_kbit_training": "jupyter-ft calls it (upcasts non-quantized params such as "
                                               "embeddings/LM head/norms to fp32); a plain TRL script does not",
        },
        "variants_run": variants,
        "variants": {},
    }
    timeout = ns.child_timeout

    if not ns.skip_memory:
        report["memory"] = {}
        for kind in ("nf4", "fp32"):
            print(f"memory: {kind}...", flush=True)
            report["memory"][kind] = run_child("memory", kind, settings, workdir, timeout)

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(ns.repeats):
        order = variants if rep % 2 == 0 else list(reversed(variants))  # alternate to spread drift
        for v in order:
            print(f"training: {v} (repeat {rep + 1}/{ns.repeats}, {steps} steps)...", flush=True)
            runs[v].append(run_child("variant", v, settings, workdir, timeout))
    for v, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            report["variants"][v] = results[-1]
            continue
        best = sorted(good, key=lambda r: r.get("tokens_per_s") or 0)[len(good) // 2]  # median run
        best = dict(best)
        if len(good) > 1:
            best["repeats_tokens_per_s"] = [r.get("tokens_per_s") for r in good]
        report["variants"][v] = best

    print("measuring the matmul peak again (the best of start and end is kept)...", flush=True)
    peak_end = measure_matmul_peak(device, size=ns.matmul_size)
    for dt in ("float32", "bfloat16"):
        a, b = (peak.get(dt) or {}).get("gflops"), (peak_end.get(dt) or {}).get("gflops")
        if b and (not a or b > a):
            peak[dt] = peak_end[dt]
        peak.setdefault("gflops_start_end", {})[dt] = [a, b]
    trl = report["variants"].get("trl") or {}
    trl_rate = trl.get("tokens_per_s")
    for v, r in report["variants"].items():
        if "error" in r:
            continue
        rate = r.get("tokens_per_s")
        r["ratio_vs_trl"] = rate / trl_rate if rate and trl_rate else None
        med, trl_med = r.get("median_step_tokens_per_s"), trl.get("median_step_tokens_per_s")
        r["ratio_vs_trl_median_step"] = med / trl_med if med and trl_med else None
        for key, pk in (("mfu_fp32_peak", "float32"), ("mfu_bf16_peak", "bfloat16")):
            g = (peak.get(pk) or {}).get("gflops")
            r[key] = rate * flops["flops_per_token"] / (g * 1e9) if rate and g else None
        # The peak that matters is that of the dtype the matmuls run in (bf16/fp16 peak is not measured
        # for fp16; fall back to fp32).
        r["mfu"] = r["mfu_bf16_peak"] if report["compute_dtype"] == "bfloat16" else r["mfu_fp32_peak"]
        su = r.get("settings_used", {})
        r["notes"] = "; ".join(filter(None, [
            "grad ckpt" if su.get("gradient_checkpointing") else "no grad ckpt",
            "length-grouped" if "group_by_length" in str(su.get("sampler")) else "random order",
            f"LoRA {su['adapter_dtype'].replace('torch.', '')}" if su.get("adapter_dtype") else None,
            (f"NOISY: slowest step {r['step_seconds_max']:.1f}s vs median {r['step_seconds_median']:.1f}s"
             if r.get("noisy") else None),
            (f"CONTENDED: other processes used {r['other_processes_cpu_share']:.0%} of the CPUs"
             if r.get("contended") else None),
        ]))

    jft = report["variants"].get("jupyter_ft") or {}
    p95 = ((jft.get("latency") or {}).get("training") or {}).get("p95_ms")
    ratio, ratio_med = jft.get("ratio_vs_trl"), jft.get("ratio_vs_trl_median_step")
    suspect = [v for v in ("jupyter_ft", "trl")
               if (report["variants"].get(v) or {}).get("contended") or (report["variants"].get(v) or {}).get("noisy")]
    report["targets"] = {
        "jupyter_ft_tokens_per_s / trl": {"value": ratio, "target": f">= {TARGET_RATIO}",
                                           "met": None if ratio is None else ratio >= TARGET_RATIO},
        "jupyter_ft_tokens_per_s / trl (median step)": {"value": ratio_med, "target": f">= {TARGET_RATIO}",
                                                         "met": None if ratio_med is None else ratio_med >= TARGET_RATIO},
        "main_thread_p95_ms_while_training": {"value": p95, "target": f"< {TARGET_P95_MS:g}",
                                              "met": None if p95 is None else p95 < TARGET_P95_MS},
    }
    if suspect:
        for key in ("jupyter_ft_tokens_per_s / trl", "jupyter_ft_tokens_per_s / trl (median step)"):
            report["targets"][key]["caveat"] = f"{', '.join(suspect)} ran on a busy machine"


    table = render_table(report)
    report["table_markdown"] = table
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out_path)
    print()
    print(table)
    print()
    print(f"wrote {out_path}")
    failed = [k for k, r in report["variants"].items() if "error" in r]
    failed += [f"memory:{k}" for k, r in (report.get("memory") or {}).items() if "error" in r]
    for k in failed:
        r = report["variants"].get(k) or (report.get("memory") or {}).get(k.split(":")[-1], {})
        print(f"\n--- {k} failed; log tail ---\n{r.get('log_tail', '')}", file=sys.stderr)
    if not ns.keep_workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept run directories and child logs in {workdir}")
    return 1 if failed else 0


def child_main(ns: argparse.Namespace) -> int:
    settings = json.loads(ns._settings)
    _set_dtype_env(ns.dtype)
    try:
        if ns._memory:
            result = child_memory(settings, ns._memory)
        elif ns._variant == "jupyter_ft":
            result = child_jupyter_ft(settings)
        elif ns._variant in ("trl", "trl_tuned"):
            result = child_trl(settings, tuned=ns._variant == "trl_tuned")
        else:
            raise SystemExit(f"unknown variant {ns._variant}")
    except Exception:
        traceback.print_exc()
        return 1
    Path(ns._result).write_text(json.dumps(result, default=str))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default 30; 4 with --quick)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", default=str(HERE / "results" / "latest.json"), help="JSON output path")
    p.add_argument("--quick", action="store_true", help="a handful of steps: a smoke check, not a measurement")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=1, help="runs per variant (alternating order); the median is kept")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype for every variant (sets JUPYTER_FT_DTYPE); auto = select_compute_dtype")
    p.add_argument("--skip-memory", action="store_true", help="skip the NF4 vs fp32 memory measurement")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds before a variant is abandoned")
    p.add_argument("--keep-workdir", action="store_true", help="keep run directories and per-variant logs")
    p.add_argument("--model", default=None, help="model for every variant (default: the built-in SmolLM2-135M)")
    # internal: one measurement in a fresh process
    p.add_argument("--_variant", help=argparse.SUPPRESS)
    p.add_argument("--_memory", choices=["nf4", "fp32"], help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    p.add_argument("--_settings", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.model:
        global MODEL
        MODEL = os.environ["JUPYTER_FT_BENCH_MODEL"] = ns.model
    if ns._variant or ns._memory:
        return child_main(ns)
    return orchestrate(ns)


if __name__ == "__main__":
    sys.exit(main())
