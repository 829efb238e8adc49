"""``compute:``: the same config on many processes and nodes under the real launchers (torchrun, ``accelerate
launch``, DeepSpeed), in processes that outlive the kernel, on this machine's CPU with gloo.

The fast tests check the section's validation and the launch commands; the slow ones launch the tiny test model
for real: 2 ranks, two nodes on one machine, Stop agreed by the ranks, resume under the same launcher, a failure
injected on rank 1 (``tests/dist_site/sitecustomize.py``), a "kernel" killed with SIGKILL while its run trains.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_ft.config import ConfigError, FineTuneConfig
from jupyter_ft.config import compute as compute_mod
from jupyter_ft.config.compute import split_global_batch, topology
from jupyter_ft.engine.launch import launch_plan
from jupyter_ft.store import RunStore, read_jsonl
from tiny_runs import tiny_run_config

SITE = Path(__file__).parent / "dist_site"


def problems_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict(data)
    found: dict[str, str] = {}
    for p in info.value.problems:  # a field with two problems has both, one per line
        found[p.path] = "\n".join(filter(None, [found.get(p.path), str(p)]))
    return found


# =========================================================================== validation
def test_compute_defaults_to_the_kernels_thread() -> None:
    cfg = FineTuneConfig.from_dict({})
    top = topology(cfg)
    assert (cfg.compute.launcher, top.strategy, top.world_size, top.distributed) == ("thread", "none", 1, False)


def test_compute_problems_are_reported_with_every_other_problem_at_once() -> None:
    found = problems_of({"training": {"learning_rate": -1},
                         "compute": {"launcher": "thraed", "processes": 0, "strategy": "zero", "zero_stage": 4,
                                     "offload": "gpu", "nodes": 0, "devices": "0,1"}})
    assert {"training.learning_rate", "compute.launcher", "compute.processes", "compute.strategy",
            "compute.zero_stage", "compute.offload", "compute.nodes", "compute.devices"} <= set(found)
    assert "Did you mean 'thread'" in found["compute.launcher"]


def test_a_thread_or_process_run_is_one_process_on_one_device() -> None:
    found = problems_of({"compute": {"launcher": "process", "processes": 2, "nodes": 2, "strategy": "deepspeed",
                                     "rdzv_endpoint": "h:1"}})
    assert "launcher: process trains in one process" in found["compute.processes"]
    assert "compute.nodes" in found and "needs a launcher of many processes" in found["compute.strategy"]


def test_many_nodes_need_an_endpoint_and_a_node_rank_below_them() -> None:
    found = problems_of({"compute": {"launcher": "torchrun", "processes": 1, "nodes": 2, "node_rank": 2}})
    assert "host:port" in found["compute.rdzv_endpoint"] and "below compute.nodes (2)" in found["compute.node_rank"]
    found = problems_of({"compute": {"launcher": "torchrun", "nodes": 2, "rdzv_endpoint": "no port"}})
    assert "must be host:port" in found["compute.rdzv_endpoint"]


def test_more_processes_than_gpus_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_mod, "visible_gpus", lambda: 2)
    found = problems_of({"compute": {"launcher": "torchrun", "processes": 4}})
    assert "more processes than GPUs (2 GPU(s) are visible)" in found["compute.processes"]
    found = problems_of({"compute": {"launcher": "torchrun", "processes": 3, "devices": [0, 1]}})
    assert "compute.devices lists 2" in found["compute.processes"]
    assert topology(FineTuneConfig.from_dict({"compute": {"launcher": "torchrun"}})).processes == 2  # auto


def test_sharded_4bit_weights_need_the_compute_dtype_as_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_mod, "visible_gpus", lambda: 2)
    found = problems_of({"compute": {"launcher": "torchrun", "strategy": "fsdp"},
                         "quantization": {"quant_storage": "uint8"}})
    assert "must be the compute dtype under FSDP" in found["quantization.quant_storage"]
    found = problems_of({"compute": {"launcher": "deepspeed", "zero_stage": 3}, "quantization": {"method": "8bit"}})
    assert "cannot be sharded (ZeRO-3)" in found["quantization.method"]
    FineTuneConfig.from_dict({"compute": {"launcher": "torchrun", "strategy": "fsdp"}})  # auto: fine


def test_fsdp_on_a_machine_without_gpus_is_refused_not_run_as_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_mod, "visible_gpus", lambda: 0)
    found = problems_of({"compute": {"launcher": "torchrun", "strategy": "fsdp", "processes": 2}})
    assert "fsdp needs GPUs" in found["compute.strategy"]


def test_deepspeed_missing_says_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compute_mod.importlib.util.find_spec
    monkeypatch.setattr(compute_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepspeed" else real(name, *a))
    found = problems_of({"compute": {"launcher": "deepspeed"}})
    assert "pip install deepspeed" in found["compute.strategy"]


def test_files_for_experts_must_exist_and_match_the_launcher(tmp_path: Path) -> None:
    found = problems_of({"compute": {"launcher": "torchrun", "deepspeed_config": str(tmp_path / "ds.json"),
                                     "accelerate_config": str(tmp_path / "acc.yaml")}})
    assert "is not a file" in found["compute.deepspeed_config"]
    assert "only with launcher: accelerate" in str(found)


def test_data_in_the_kernels_memory_cannot_reach_a_process() -> None:
    found = problems_of({"data": {"source": [{"text": "a"}]}, "compute": {"launcher": "process"}})
    assert "a process of its own cannot read" in found["data.source"] and "to_json" in found["data.source"]


def test_the_global_batch_must_split_over_the_world() -> None:
    found = problems_of({"training": {"batch_size": 3, "grad_accum": 1}, "compute": {"launcher": "torchrun",
                                                                                    "processes": 2}})
    assert "must split evenly over the world size 2" in found["training.batch_size"]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 64), st.integers(1, 16), st.integers(1, 16))
def test_a_batch_split_keeps_the_global_batch(batch: int, accum: int, world: int) -> None:
    split = split_global_batch(batch, accum, world)
    if split is None:
        assert (batch * accum) % world != 0
    else:
        per_device, per_rank = split
        assert per_device * per_rank * world == batch * accum and batch % per_device == 0


# =========================================================================== launch commands
def config(**compute: Any) -> FineTuneConfig:
    return FineTuneConfig.from_dict({"compute": compute, "training": {"batch_size": 8}})


def test_launch_commands_are_the_launchers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a value of the user's own wins
    run = Path("/runs/r1")
    plan = launch_plan(config(launcher="torchrun", processes=2), run)
    assert plan.argv[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    assert plan.argv[-3:] == ["-m", "jupyter_ft.worker", "/runs/r1"]
    assert (plan.per_device_batch, plan.grad_accum_per_rank, plan.examples_per_step) == (4, 1, 8)
    assert plan.env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))  # one CPU share per rank

    multi = launch_plan(config(launcher="torchrun", processes=1, nodes=2, rdzv_endpoint="10.0.0.1:29400"), run,
                        node_rank=1, resume=True)
    assert multi.argv[5:15] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port",
                                "29400", "-m", "jupyter_ft.worker"] and multi.argv[-1] == "--resume"

    acc = launch_plan(config(launcher="accelerate", processes=2), run)
    assert acc.argv[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in acc.argv  # never --cpu
    assert acc.argv[acc.argv.index("--num_processes") + 1] == "2"

    ds = launch_plan(config(launcher="deepspeed", processes=2), run)
    assert ds.argv[1:3] == ["-m", "deepspeed.launcher.runner"] and ds.argv[-2:] == ["jupyter_ft.worker", "/runs/r1"]

    one = launch_plan(config(launcher="process", devices=[1]), run)
    assert one.argv[1:] == ["-m", "jupyter_ft.worker", "/runs/r1"] and one.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert "CUDA_VISIBLE_DEVICES=1" in one.command


def test_two_single_node_launches_never_share_a_port() -> None:
    a, b = (launch_plan(config(launcher="accelerate", processes=2), Path("/r")) for _ in range(2))
    port = lambda p: p.argv[p.argv.index("--main_process_port") + 1]  # noqa: E731
    assert port(a) != port(b)


# =========================================================================== real launches (slow)
def make_run(model_dir: Path, root: Path, name: str, compute: dict[str, Any], **training: Any) -> Path:
    data = tiny_run_config(model_dir, root, probes={"forgetting": False}, **training)
    data["compute"] = compute
    cfg = FineTuneConfig.from_dict(data)
    return RunStore(root).create(cfg.to_dict(), name).path


def launch(run_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 420) -> subprocess.Popen:
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "jupyter_ft.launch", str(run_dir), *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def train_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl") if "loss" in m]


def eval_losses(run_dir: Path) -> list[float]:
    return [m["eval_loss"] for m in read_jsonl(run_dir / "metrics.jsonl") if "eval_loss" in m]


def rank_pids(run_dir: Path) -> list[int]:
    pids = []
    for log in (run_dir / "logs").glob("rank-*.log"):
        pids += [int(p) for p in re.findall(r"in process (\d+)", log.read_text(errors="replace"))]
    launcher = (run_dir / "logs" / "launcher.log")
    if launcher.is_file():
        pids += [int(p) for p in re.findall(r"in process (\d+)", launcher.read_text(errors="replace"))]
    return pids


def wait_until_running(root: Path, run_dir: Path, timeout: float = 240) -> RunStore:
    """The store, once rank 0 has recorded the run ``running`` (the model is loaded, training begins)."""
    store = RunStore(root)
    deadline = time.monotonic() + timeout
    while store.open(run_dir.name).record.status != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    return store


def assert_no_process_left(run_dir: Path) -> None:
    import psutil

    launch_info = RunStore(run_dir.parent).load(run_dir.name).launch
    pids = set(rank_pids(run_dir)) | {launch_info.get("supervisor_pid"), launch_info.get("launcher_pid")} - {None}
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.2)
    assert not alive, f"processes left behind: {alive}"
    assert pids, "the launch recorded no process ids"


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process_with_the_same_global_batch(tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    root = tmp_path / "runs"
    two = make_run(tiny_model_dir, root, "two", {"launcher": "torchrun", "processes": 2})
    one = make_run(tiny_model_dir, root, "one", {"launcher": "process"})
    for run_dir in (two, one):
        out = finish(launch(run_dir))
        record = RunStore(root).load(run_dir.name)
        assert record.status == "finished", (record.error, out)
        assert train_steps(run_dir) == [1, 2, 3, 4, 5, 6]  # each step logged once, by rank 0 alone
    record = RunStore(root).load(two.name)
    assert record.launch["launcher"] == "torchrun" and record.launch["world_size"] == 2
    assert record.summary["world_size"] == 2 and record.summary["examples_per_step"] == 4
    assert (record.launch["per_device_batch"], record.launch["grad_accum_per_rank"]) == (2, 1)
    assert {p.name for p in (two / "logs").glob("rank-*.log")} == {"rank-0.log", "rank-1.log"}
    assert all(m.get("examples_per_step") == 4 for m in read_jsonl(two / "metrics.jsonl") if "loss" in m)
    # The same 4 examples per optimizer step, from the same seed and split: the ranks see them in another order
    # (the sampler shards each batch) and reduce in bf16, so the curves differ in the 3rd digit, not more.
    final_two, final_one = eval_losses(two)[-1], eval_losses(one)[-1]
    assert abs(final_two - final_one) / final_one < 0.02, (final_two, final_one)
    assert (two / "adapter" / "adapter_model.safetensors").is_file()
    assert_no_process_left(two)


@pytest.mark.slow
def test_accelerate_launch_two_ranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "acc", {"launcher": "accelerate", "processes": 2})
    out = finish(launch(run_dir))
    record = RunStore(root).load(run_dir.name)
    assert record.status == "finished", (record.error, out)
    assert record.launch["launcher"] == "accelerate" and record.summary["world_size"] == 2
    assert train_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert {p.name for p in (run_dir / "logs").glob("rank-*.log")} == {"rank-0.log", "rank-1.log"}


@pytest.mark.slow
def test_two_nodes_on_one_machine(tiny_model_dir: Path, tmp_path: Path) -> None:
    from jupyter_ft.engine.launch import free_port

    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "nodes", {"launcher": "torchrun", "processes": 1, "nodes": 2,
                                                         "rdzv_endpoint": f"127.0.0.1:{free_port()}"})
    node0 = launch(run_dir, "--node-rank", "0")
    node1 = launch(run_dir, "--node-rank", "1")
    outs = [finish(node0), finish(node1)]
    assert node0.returncode == 0 and node1.returncode == 0, outs
    record = RunStore(root).load(run_dir.name)
    assert record.status == "finished" and record.summary["world_size"] == 2
    assert train_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "logs" / "launcher-node-1.log").is_file()  # node 1 keeps its own log, writes no record
    assert "--node_rank 0" in record.launch["command"]


@pytest.mark.slow
def test_stop_is_agreed_by_every_rank_and_resume_continues_under_the_same_launcher(tiny_model_dir: Path,
                                                                                  tmp_path: Path) -> None:
    from jupyter_ft.engine import resume
    from jupyter_ft.engine.process_run import follow

    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "stop", {"launcher": "torchrun", "processes": 2}, max_steps=40,
                       save_every=100, eval_every=100)
    proc = launch(run_dir, env={"JFT_TEST_STEP_SECONDS": "0.3"})
    run = follow(RunStore(root).open(run_dir.name))  # the dashboard's handle of a run trained elsewhere
    deadline = time.monotonic() + 240
    while (run.progress.get("step") or 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    run.stop()  # the dashboard's Stop: the request file, read by rank 0, spread by the process group
    assert run.wait(240) == "stopped", finish(proc)
    finish(proc)
    stopped_at = {int(m) for log in (run_dir / "logs").glob("rank-*.log")
                  for m in re.findall(r"stopped at step (\d+)", log.read_text(errors="replace"))}
    assert len(stopped_at) == 1, stopped_at  # both ranks, the same step
    step = stopped_at.pop()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == [
        f"checkpoint-{step}"]
    assert_no_process_left(run_dir)

    resumed = resume(run_dir.name, root=root)  # under torchrun again, from that checkpoint
    assert type(resumed).__name__ == "ProcessRun"
    assert resumed.wait(300) == "finished", resumed.error
    assert train_steps(run_dir) == list(range(1, 41))  # every step once
    assert RunStore(root).load(run_dir.name).launch["world_size"] == 2


@pytest.mark.slow
def test_a_stop_request_file_stops_both_ranks_and_a_second_stop_ends_the_launch(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "force", {"launcher": "torchrun", "processes": 2}, max_steps=200,
                       save_every=2, eval_every=100)
    # steps of 20 s: the first Stop cannot be honoured before the second one arrives
    proc = launch(run_dir, env={"JFT_TEST_STEP_SECONDS": "20"})
    store = wait_until_running(root, run_dir)
    rd = store.open(run_dir.name)
    rd.request_stop("test")
    time.sleep(1)
    rd.request_stop("test", force=True)  # a second Stop: the supervisor ends every process now
    finish(proc, timeout=120)
    record = store.load(run_dir.name)
    assert record.status == "stopped" and "a second Stop" in " ".join(record.warnings)
    assert_no_process_left(run_dir)


@pytest.mark.slow
def test_a_failure_on_rank_1_fails_the_run_with_its_traceback_and_leaves_no_process(tiny_model_dir: Path,
                                                                                    tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "fail", {"launcher": "torchrun", "processes": 2}, max_steps=20)
    out = finish(launch(run_dir, env={"JFT_TEST_FAIL_RANK": "1", "JFT_TEST_FAIL_STEP": "2"}))
    record = RunStore(root).load(run_dir.name)
    assert record.status == "failed", out
    assert record.error.startswith("rank 1: ") and "injected failure on rank 1 at step 2" in record.error
    assert "RuntimeError: injected failure" in record.traceback and record.launch["failed_rank"] == 1
    assert record.launch["exit_code"] != 0
    assert_no_process_left(run_dir)


KERNEL = textwrap.dedent("""
    import json, sys, time
    from jupyter_ft.engine import finetune
    run = finetune(json.loads(sys.argv[1]))
    print(run.id, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_a_run_outlives_its_kernel_and_a_new_kernel_reattaches(tiny_model_dir: Path, tmp_path: Path) -> None:
    from jupyter_ft.widgets import dashboard_for

    root = tmp_path / "runs"
    data = tiny_run_config(tiny_model_dir, root, probes={"forgetting": False}, max_steps=30)
    data["compute"] = {"launcher": "torchrun", "processes": 2}
    env = dict(os.environ, JFT_TEST_STEP_SECONDS="0.3",
               PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]))
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, json.dumps(data)], env=env, stdout=subprocess.PIPE,
                              text=True)
    run_id = kernel.stdout.readline().strip()
    store = RunStore(root)
    deadline = time.monotonic() + 240
    while (store.open(run_id).progress() or {}).get("step", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    kernel.send_signal(signal.SIGKILL)  # the kernel dies; its run's processes are in a session of their own
    kernel.wait(10)
    assert store.load(run_id).status == "running"  # a new kernel lists it running: the heartbeat is alive
    dashboard = dashboard_for(store.path_of(run_id), mode="static")  # re-attaches live
    assert type(dashboard.run).__name__ == "ProcessRun"
    assert dashboard.wait(timeout=300) == "finished"
    assert store.load(run_id).status == "finished" and train_steps(store.path_of(run_id)) == list(range(1, 31))
    assert dashboard.state.last_log.get("step") == 30
    assert_no_process_left(store.path_of(run_id))


@pytest.mark.slow
@pytest.mark.parametrize("zero", [{"zero_stage": 2}, {"zero_stage": 3, "offload": "cpu"}],
                         ids=["zero2", "zero3-offload"])
def test_deepspeed_zero_under_torchrun_on_the_cpu(tiny_model_dir: Path, tmp_path: Path, zero: dict) -> None:
    pytest.importorskip("deepspeed")
    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "zero", {"launcher": "torchrun", "processes": 2,
                                                        "strategy": "deepspeed", **zero})
    out = finish(launch(run_dir), timeout=600)
    record = RunStore(root).load(run_dir.name)
    assert record.status == "finished", (record.error, out)
    losses = eval_losses(run_dir)
    assert losses[-1] < losses[0]  # it learns
    assert any((run_dir / "checkpoints" / "checkpoint-6").glob("global_step*"))  # DeepSpeed's own checkpoint
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_sweep_refuses_a_process_launcher_instead_of_ignoring_it(tmp_path: Path) -> None:
    from jupyter_ft.errors import RunStateError
    from jupyter_ft.sweep import start_sweep

    base = {"output": {"root": str(tmp_path)}, "compute": {"launcher": "torchrun", "processes": 2}}
    with pytest.raises(RunStateError, match="not supported in a sweep yet"):
        start_sweep(base, {"params": {"training.learning_rate": [1e-4, 2e-4]}})
    assert not list(tmp_path.iterdir())  # nothing created


@pytest.mark.slow
def test_ranks_that_do_not_answer_a_stop_within_the_bound_are_ended(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = make_run(tiny_model_dir, root, "bound", {"launcher": "torchrun", "processes": 2}, max_steps=200,
                       save_every=2, eval_every=100)
    # steps of 30 s and a 3 s bound: the ranks cannot reach the end of their step in time
    proc = launch(run_dir, env={"JFT_TEST_STEP_SECONDS": "30", "JUPYTER_FT_STOP_GRACE": "3"})
    store = wait_until_running(root, run_dir)
    store.open(run_dir.name).request_stop("test")  # one Stop only
    finish(proc, timeout=120)
    record = store.load(run_dir.name)
    assert record.status == "stopped" and "no rank ended within 3 s of Stop" in " ".join(record.warnings)
    assert_no_process_left(run_dir)
