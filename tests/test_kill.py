"""The kill suite: ``kill -9`` of the kernel training a run mid-step, mid-evaluation, mid-checkpoint, mid-final-save.

The kernel is a child process (a real Jupyter kernel running ``%%finetune`` in one scenario, a plain ``python``
calling ``jupyter_ft.finetune`` in the others, for speed) that trains the tiny model and freezes at the exact point
(``tests/kill_child.py``): the test waits for its marker and sends SIGKILL, so the kill lands where it is meant to,
not where timing luck put it. This test process then plays the new kernel, and each scenario checks what the README
promises a run directory survives ("What a run directory promises"):

- the run lists as ``interrupted`` (``RunStore.list()`` and ``%ft_runs``), while the killed kernel is still an
  unreaped zombie and after;
- the resume (``jupyter_ft.resume``, or ``%ft_resume`` in one scenario) starts from the newest *complete*
  checkpoint: not the one the kill cut short;
- every training step, evaluation and probe is recorded once, and the re-trained steps are the same steps;
- the final adapter loads with peft and gives finite logits;
- nothing that was complete at the kill is missing (the checkpoints, the metrics lines up to the resumed
  checkpoint), and no process is left behind.

Each passing scenario counts in the ``reliability:`` line at the end of ``make test``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell

import jupyter_ft
import reliability
from jupyter_ft.store import RunStore, read_jsonl

pytestmark = pytest.mark.reliability

TESTS = Path(__file__).resolve().parent
CHILD = TESTS / "kill_child.py"

# The schedule every scenario trains: evaluations at 2, 4, 6, 8; checkpoints at 3, 6 and 8 (the Trainer also saves
# at the last step); logging every step, so each step has exactly one train-loss line.
MAX_STEPS, EVAL_EVERY, SAVE_EVERY = 8, 2, 3
TRAIN_STEPS = list(range(1, MAX_STEPS + 1))
EVAL_STEPS = list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
MARKER_TIMEOUT = 150.0  # seconds for a child to import the stack, prepare the data and train to its kill point


@dataclass(frozen=True)
class Scenario:
    """Where the kernel dies, and what the newest complete checkpoint is at that moment."""

    point: str  # a kill point of kill_child.py
    at: int  # which step (mid-step), evaluation (mid-eval) or checkpoint step (mid-checkpoint) it freezes at
    resume_step: int  # the newest complete checkpoint at the kill: where the resume must start from
    kernel: bool = False  # a real Jupyter kernel launching %%finetune; else a plain python child
    magic: bool = False  # resumed with %ft_resume in this process's IPython shell; else jupyter_ft.resume


SCENARIOS = [
    # step 5 has run forward and backward, not its optimizer step; steps 4 and 5 are after checkpoint-3
    Scenario("mid-step", at=5, resume_step=3, kernel=True, magic=True),
    # inside the second evaluation (step 4), after its first batch: no eval line for step 4 yet
    Scenario("mid-eval", at=2, resume_step=3),
    # checkpoint-6 has its weights, optimizer and RNG state, not its trainer_state.json: the resume must skip it
    Scenario("mid-checkpoint", at=6, resume_step=3),
    # the same half checkpoint where a complete one would be (the Trainer's own in-place save): the store's test
    # of completeness alone must pass it over for checkpoint-3
    Scenario("mid-checkpoint-in-place", at=6, resume_step=3),
    # training and the last checkpoint are done; the final adapter's weights are half way to adapter/
    Scenario("mid-final-save", at=0, resume_step=MAX_STEPS),
]


def make_config(model_dir: Path, root: Path) -> dict[str, Any]:
    """The tests' small, fast run (as in test_training.py), with the overfitting probe on so that
    ``probes.jsonl`` is checked too, and the forgetting probe off (it generates with the base model: slow)."""
    return {
        "model": {"name": str(model_dir)},
        "data": {"source": "demo:support_tickets", "max_length": 128, "eval_split": 0.05},
        "lora": {"r": 4, "alpha": 8},
        "training": {"max_steps": MAX_STEPS, "batch_size": 4, "logging_every": 1, "eval_every": EVAL_EVERY,
                     "save_every": SAVE_EVERY, "learning_rate": 1e-3},
        "probes": {"overfitting": True, "forgetting": False},
        "output": {"root": str(root)},
    }


def to_yaml(config: dict[str, Any]) -> str:
    """The body of a ``%%finetune`` cell for a config of sections of scalars (JSON scalars are YAML scalars)."""
    lines = []
    for section, fields in config.items():
        lines.append(f"{section}:")
        lines.extend(f"  {key}: {json.dumps(value)}" for key, value in fields.items())
    return "\n".join(lines) + "\n"


def child_env() -> dict[str, str]:
    """The test's environment (offline hub, the test cache of converted models) plus no widgets and one thread
    per library: the machine has two cores, shared between the child and this process."""
    env = dict(os.environ, JUPYTER_FT_DASHBOARD="static", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------- the kernels that get killed
@dataclass
class Kernel:
    """A child process that trains one run and freezes at its kill point; ``proc`` is its ``Popen`` (for a Jupyter
    kernel, the one jupyter_client launched), ``log`` its stdout and stderr, ``release`` whatever else it holds."""

    proc: subprocess.Popen[bytes]
    log: Path
    release: Callable[[], None] = lambda: None
    family: list[psutil.Process] = field(default_factory=list)  # it and its descendants, seen before the kill
    closed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        """Release what else the kernel held (its client, its connection file), once."""
        if not self.closed:
            self.closed = True
            self.release()

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.is_file() else ""
        return text[-chars:]


def start_python_child(scenario: Scenario, config: dict[str, Any], marker: Path, tmp_path: Path) -> Kernel:
    """A plain ``python`` kernel: ``kill_child.py`` trains the run with ``jupyter_ft.finetune(config, wait=True)``."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(CHILD), scenario.point, str(scenario.at), str(config_path),
                                 str(marker)], stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=tmp_path)
    return Kernel(proc, log)


def start_jupyter_kernel(scenario: Scenario, config: dict[str, Any], marker: Path, tmp_path: Path) -> Kernel:
    """A real Jupyter kernel (ipykernel through jupyter_client), driven as a notebook would be: one cell installs the
    kill point, then ``%load_ext jupyter_ft`` and a ``%%finetune`` cell, which returns at once while the run trains
    in the kernel's background thread."""
    from jupyter_client.manager import KernelManager

    log = tmp_path / "kernel.log"
    out = log.open("wb")
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=child_env(), cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    kc = km.client()
    kc.start_channels()

    def release() -> None:
        kc.stop_channels()
        km.shutdown_kernel(now=True)  # the kernel is dead by then: this removes its connection file
        out.close()

    kernel = Kernel(km.provisioner.process, log, release)  # type: ignore[union-attr]
    try:
        kc.wait_for_ready(timeout=90)
        cells = [f"import kill_child\nkill_child.install({scenario.point!r}, {str(marker)!r}, {scenario.at})",
                 "%load_ext jupyter_ft",
                 f"%%finetune --name kill-{scenario.point}\n" + to_yaml(config)]
        for code in cells:
            msg_id = kc.execute(code)
            reply = kc.get_shell_msg(timeout=120)
            assert reply["parent_header"].get("msg_id") == msg_id
            content = reply["content"]
            assert content["status"] == "ok", (code, content.get("ename"), content.get("evalue"), kernel.log_tail())
    except BaseException:
        kernel.proc.kill()
        kernel.proc.wait(30)
        kernel.close()
        raise
    return kernel


@pytest.fixture()
def kernels() -> Iterator[list[Kernel]]:
    """The children a test starts: whatever happens in the test, none outlives it (killed and reaped here)."""
    started: list[Kernel] = []
    yield started
    for kernel in started:
        if kernel.proc.poll() is None:
            kernel.proc.kill()
        kernel.proc.wait(30)
        kernel.close()


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    """This process's IPython shell: the new kernel's ``%ft_runs`` and ``%ft_resume``."""
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_ft")
    return ip


# --------------------------------------------------------------------------- waiting and killing, by polling
def poll(until: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] = lambda: "") -> Any:
    """Poll ``until()`` every 50 ms until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = until()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s. {detail()}")
        time.sleep(0.05)


def run_json(root: Path) -> dict[str, Any] | None:
    """The one run's record as the child last wrote it, read from the file (no store: nothing is marked)."""
    for path in root.glob("*/run.json") if root.is_dir() else []:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):  # being replaced: read it again at the next poll
            return None
    return None


def wait_for_marker(kernel: Kernel, marker: Path, root: Path) -> dict[str, Any]:
    """What the child wrote when it froze at its kill point. Fails at once, with the child's output, if the child
    exits or its run ends first (the kill point was never reached)."""

    def reached() -> dict[str, Any] | None:
        if marker.is_file():
            return json.loads(marker.read_text(encoding="utf-8"))
        if kernel.proc.poll() is not None:
            pytest.fail(f"the kernel exited ({kernel.proc.returncode}) before its kill point:\n{kernel.log_tail()}")
        record = run_json(root)
        if record and record.get("status") in ("finished", "stopped", "failed"):
            pytest.fail(f"the run ended {record['status']} before the kill point: {record.get('error')}\n"
                        f"{record.get('traceback') or ''}\n{kernel.log_tail()}")
        return None

    return poll(reached, MARKER_TIMEOUT, "the kernel reaching its kill point", kernel.log_tail)


def kill_9(kernel: Kernel) -> None:
    """SIGKILL, and wait until the kernel is a zombie: dead, and not yet reaped by its parent (this process), as a
    kernel killed under a Jupyter server is until the server notices. Its descendants are remembered first."""
    me = psutil.Process(kernel.pid)
    kernel.family = [me, *me.children(recursive=True)]
    os.kill(kernel.pid, signal.SIGKILL)

    def dead() -> bool:
        try:
            return me.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    poll(dead, 30, "the killed kernel to die")


def reap(kernel: Kernel) -> None:
    """Reap the killed kernel and check that no process of its family is left (an orphan would keep the GPU, the
    run directory's files, or worse, go on writing them)."""
    assert kernel.proc.wait(30) == -signal.SIGKILL
    kernel.close()
    poll(lambda: not any(p.is_running() for p in kernel.family), 30, "every process of the killed kernel to go",
         lambda: f"left: {[p.pid for p in kernel.family if p.is_running()]}")
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not mine & {p.pid for p in kernel.family}


# --------------------------------------------------------------------------- what a kill may not lose
def complete_checkpoints(run_path: Path) -> set[str]:
    """The checkpoints that are complete by the README's definition (their ``trainer_state.json`` parses and names
    their step, their weights are there), checked here on the files rather than by the store's own code."""
    out = set()
    for path in (run_path / "checkpoints").glob("checkpoint-*"):
        try:
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        weights = path / "adapter_model.safetensors"
        if state.get("global_step") == int(path.name.rsplit("-", 1)[-1]) and weights.is_file() \
                and weights.stat().st_size > 0:
            out.add(path.name)
    return out


@dataclass
class Snapshot:
    """The run directory at the moment of the kill: its metrics and probe lines and its complete checkpoints."""

    path: Path
    metrics: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    checkpoints: set[str]

    @classmethod
    def take(cls, run_path: Path) -> "Snapshot":
        return cls(run_path, read_jsonl(run_path / "metrics.jsonl"), read_jsonl(run_path / "probes.jsonl"),
                   complete_checkpoints(run_path))

    def lost_checkpoints(self) -> int:
        """Complete checkpoints at the kill that are gone now (checked before the resume, whose own saves may
        rotate old ones out, as ``save_total_limit`` says)."""
        return len(self.checkpoints - complete_checkpoints(self.path))

    def lost_lines(self, resume_step: int) -> int:
        """Lines up to the resumed checkpoint at the kill that are not in the files now, exactly as written (the
        resume supersedes only the lines after it: it trains those steps again)."""
        metrics, probes = read_jsonl(self.path / "metrics.jsonl"), read_jsonl(self.path / "probes.jsonl")
        return (sum(1 for m in self.metrics if m["step"] <= resume_step and m not in metrics)
                + sum(1 for p in self.probes if p["step"] <= resume_step and p not in probes))


def kill_state_is_as_meant(scenario: Scenario, where: dict[str, Any], snap: Snapshot) -> None:
    """The kill landed where the scenario says: what was written, and what was not yet."""
    train = [m["step"] for m in snap.metrics if "loss" in m]
    evals = [m["step"] for m in snap.metrics if "eval_loss" in m]
    assert where["point"] == scenario.point
    assert max(int(c.rsplit("-", 1)[-1]) for c in snap.checkpoints) == scenario.resume_step, snap.checkpoints
    if scenario.point == "mid-step":
        assert where["step"] == scenario.at and train == list(range(1, scenario.at))  # step 5 never logged
    elif scenario.point == "mid-eval":
        step = where["step"]
        assert step == EVAL_STEPS[scenario.at - 1] and train == list(range(1, step + 1))
        assert evals == EVAL_STEPS[:scenario.at - 1]  # the cut evaluation logged nothing
    elif scenario.point.startswith("mid-checkpoint"):
        half = Path(where["checkpoint"])
        assert half.name == f"checkpoint-{scenario.at}" and (half / "adapter_model.safetensors").is_file()
        if scenario.point == "mid-checkpoint-in-place":
            assert half.parent == snap.path / "checkpoints"
        assert not (half / "trainer_state.json").exists()  # what makes a checkpoint complete was never written
        assert f"checkpoint-{scenario.at}" not in snap.checkpoints
    else:
        partial = Path(where["partial"])
        assert (partial / "adapter_model.safetensors").is_file() and partial != snap.path / "adapter"
        assert not (snap.path / "adapter").exists()  # complete or absent: nothing half-written at adapter/
        assert train == TRAIN_STEPS and evals == EVAL_STEPS


def listed_as_interrupted(shell: InteractiveShell, root: Path, run_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The new kernel sees the run ``interrupted`` in the store and in ``%ft_runs``, and the record on disk says so
    from then on (for every other reader)."""
    listed = {r.id: r.status for r in RunStore(root).list()}
    assert listed == {run_id: "interrupted"}
    capsys.readouterr()
    shell.run_line_magic("ft_runs", f"--root {root}")
    rows = [line for line in capsys.readouterr().out.splitlines() if run_id in line]
    assert len(rows) == 1 and " interrupted " in f"{rows[0]} ", rows
    assert json.loads((root / run_id / "run.json").read_text(encoding="utf-8"))["status"] == "interrupted"


def resume(scenario: Scenario, shell: InteractiveShell, root: Path, run_id: str,
           capsys: pytest.CaptureFixture[str]) -> Any:
    """Resume in this process, the new kernel: ``%ft_resume RUN --root ... --wait`` or ``jupyter_ft.resume``."""
    if not scenario.magic:
        return jupyter_ft.resume(run_id, root=str(root), wait=True)
    capsys.readouterr()
    shell.run_line_magic("ft_resume", f"{run_id} --root {root} --wait --out resumed")
    assert f"resuming {run_id} from its checkpoint at step {scenario.resume_step}" in capsys.readouterr().out
    return shell.user_ns.pop("resumed")


def every_step_once(run_path: Path, snap: Snapshot, resume_step: int) -> None:
    """Each training step, evaluation and probe measurement is recorded once, no line is torn, and the steps trained
    again after the resumed checkpoint are the same steps: the same batches from the same state give the loss the
    killed kernel logged for them."""
    text = (run_path / "metrics.jsonl").read_text(encoding="utf-8")
    metrics = read_jsonl(run_path / "metrics.jsonl")
    assert len(metrics) == text.count("\n") == len(text.splitlines())
    assert [m["step"] for m in metrics if "loss" in m] == TRAIN_STEPS
    assert [m["step"] for m in metrics if "eval_loss" in m] == EVAL_STEPS
    assert [m["step"] for m in metrics if "train_loss" in m] == [MAX_STEPS]  # the end-of-training summary, once
    assert [p["step"] for p in read_jsonl(run_path / "probes.jsonl") if not p.get("start")] == EVAL_STEPS
    tokens = [m["tokens_seen"] for m in metrics if "loss" in m]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # counted on across the resume
    again = {m["step"]: m for m in metrics if "loss" in m}
    for before in (m for m in snap.metrics if "loss" in m and m["step"] > resume_step):
        now = again[before["step"]]
        assert now["tokens_seen"] == before["tokens_seen"], (before["step"], before["tokens_seen"], now["tokens_seen"])
        assert math.isclose(now["loss"], before["loss"], rel_tol=1e-3), (before["step"], before["loss"], now["loss"])


def adapter_loads(model_dir: Path, adapter_dir: Path) -> None:
    """The final adapter is whole: peft loads it onto the base model and the tuned model gives finite logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = AutoTokenizer.from_pretrained(adapter_dir)("My order never arrived.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape and bool(torch.isfinite(logits).all())


# --------------------------------------------------------------------------- the scenarios
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.point for s in SCENARIOS])
def test_kill_9_then_a_new_kernel_lists_resumes_and_loses_nothing(scenario: Scenario, tiny_model_dir: Path,
                                                                  tmp_path: Path, kernels: list[Kernel],
                                                                  shell: InteractiveShell,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    marker = tmp_path / "frozen.json"
    config = make_config(tiny_model_dir, root)
    start = start_jupyter_kernel if scenario.kernel else start_python_child
    kernel = start(scenario, config, marker, tmp_path)
    kernels.append(kernel)

    where = wait_for_marker(kernel, marker, root)
    assert where["pid"] == kernel.pid  # the run trains in the kernel's own process (its background thread)
    (run_id,) = [r.id for r in RunStore(root).list()]
    assert RunStore(root).load(run_id).status == "running"  # alive and frozen: a reader must not call it dead

    kill_9(kernel)
    run_path = root / run_id
    snap = Snapshot.take(run_path)
    kill_state_is_as_meant(scenario, where, snap)

    listed_as_interrupted(shell, root, run_id, capsys)  # the killed kernel is still an unreaped zombie here
    reap(kernel)
    listed_as_interrupted(shell, root, run_id, capsys)  # and gone
    lost = snap.lost_checkpoints()

    run = resume(scenario, shell, root, run_id, capsys)
    assert run.id == run_id and run.status == "finished" and run.error is None, (run.error,
                                                                                 run.run_dir.record.traceback)
    assert Path(run.resume_from).name == f"checkpoint-{scenario.resume_step}"  # the newest complete one
    assert {r.id: r.status for r in RunStore(root).list()} == {run_id: "finished"}
    assert run.summary["global_step"] == MAX_STEPS
    every_step_once(run_path, snap, scenario.resume_step)
    adapter_loads(tiny_model_dir, run_path / "adapter")
    assert not (run_path / ".adapter.tmp").exists()  # a killed final save leaves nothing behind once resumed

    lost += snap.lost_lines(scenario.resume_step)
    reliability.lost(lost)
    assert lost == 0
    reliability.kill(scenario.point)
