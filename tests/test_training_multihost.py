"""clip-finetune-flax on 2 processes x 2 simulated CPU devices (jax.distributed on 127.0.0.1, gloo
collectives) against 1 process x 4 devices, on streamed webdataset shards with the sigmoid loss and
parameters split along "fsdp" within each host.

Real subprocesses on a free port chosen here, each phase bounded by a timeout and every process
killed at the end, also on failure. One module-scoped fixture runs, at the same time:
- the reference: 1 process x 4 devices, 6 steps, export;
- 2 processes x 2 devices, each step in 2 micro-batches (the gradient cache), checkpoints every 3
  steps, SIGKILLed as soon as host 0 prints that the step-3 checkpoint is saved; then resumed
  (--resume) to step 6 and exported, with the coordinator given in JAX_COORDINATOR_ADDRESS.
The 2-process losses, the resume point and the exported weights must match the reference. Two short
runs check that the hosts fail together, with the error of the host at fault, never hang: one host
seeing different files (stopped at start-up), one host whose stream has no usable sample (stopped
in the first steps).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("orbax.checkpoint")

from tests.test_shards import write_shards  # noqa: E402
from tests.tiny_configs import clip_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, SAVE_AT = 6, 3
# The 2-process runs take each step in 2 micro-batches (the gradient cache): the same step as one
# batch, so the same numbers as the reference's. (The failure runs too: one compiled program.)
TWO = ["--accum", "2"]
TIMEOUT = 150  # seconds for one phase on a busy 2-core machine; typical: 20-30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Launches clip-finetune-flax processes; ``close`` kills whatever is still running."""

    def __init__(self, tmp) -> None:
        self.tmp, self.procs = tmp, []

    def launch(self, name, argv_per_process, devices: int, coordinator_env=False) -> list[subprocess.Popen]:
        """``coordinator_env``: the coordinator from JAX_COORDINATOR_ADDRESS instead of --coordinator."""
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            # LLVM's optimisation level 0: less compile time; every run here compiles the same way.
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
        }
        n = len(argv_per_process)
        distributed = []
        if n > 1:
            address = f"127.0.0.1:{free_port()}"
            distributed = ["--num-processes", str(n)]
            if coordinator_env:
                env["JAX_COORDINATOR_ADDRESS"] = address
            else:
                distributed += ["--coordinator", address]
        started = []
        for i, argv in enumerate(argv_per_process):
            out = open(self.tmp / f"{name}-{i}.out", "w")  # noqa: SIM115 (closed with the process)
            err = open(self.tmp / f"{name}-{i}.err", "w")  # noqa: SIM115
            extra = [*distributed, "--process-id", str(i)] if n > 1 else []
            proc = subprocess.Popen(
                [sys.executable, "-m", "clip_flax.cli", *argv, *extra],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
            proc.files = (out, err)
            self.procs.append(proc)
            started.append(proc)
        return started

    def wait(self, procs, timeout=TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.close()
                pytest.fail(f"a training process did not finish in {timeout} s:\n{self.logs(procs)}")
        return codes

    def logs(self, procs) -> str:
        text = []
        for proc in procs:
            for f in proc.files:
                f.flush()
                with open(f.name) as r:
                    text.append(f"--- {os.path.basename(f.name)}\n{r.read()[-3000:]}")
        return "\n".join(text)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in proc.files:
                f.close()


def wait_for_line(path, needle: str, procs, timeout=TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            if needle in f.read():
                return
        if any(p.poll() is not None for p in procs):
            return  # exited early: the caller's checks say why
        time.sleep(0.01)
    pytest.fail(f"no {needle!r} in {path} after {timeout} s")


def with_shards(argv: list[str], pattern: str) -> list[str]:
    i = argv.index("--shards")
    return [*argv[:i], "--shards", pattern, *argv[i + 2 :]]


def metrics(path) -> dict[int, float]:
    return {x["step"]: x["loss"] for x in map(json.loads, open(path)) if "loss" in x}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The data, the config and the arguments every run here shares (and its compilation cache)."""
    tmp = tmp_path_factory.mktemp("multihost")
    clip_config("micro").save_pretrained(str(tmp / "cfg"))
    shards = write_shards(str(tmp / "shards"))
    common = ["--config", str(tmp / "cfg"), "--shards", shards, "--data-streams", "4",
              "--shuffle-buffer", "4", "--batch-size", "8", "--steps", str(STEPS), "--lr", "3e-3",
              "--loss", "sigmoid", "--mesh-fsdp", "2", "--no-progress", "--log-every", "1",
              "--compilation-cache", str(tmp / "jax-cache")]  # fmt: skip
    return tmp, common


@pytest.fixture(scope="module")
def runs(setup):
    tmp, common = setup
    procs = Processes(tmp)
    try:
        start = time.monotonic()
        reference = procs.launch(
            "ref", [[*common, "--export", str(tmp / "ref"), "--metrics-file", str(tmp / "ref.jsonl")]], 4
        )
        two = [*common, *TWO, "--ckpt-dir", str(tmp / "ckpt"), "--save-every", str(SAVE_AT)]
        first = procs.launch("first", [[*two, "--metrics-file", str(tmp / "first.jsonl")]] * 2, 2)
        wait_for_line(tmp / "first-0.out", f"checkpoint saved at step {SAVE_AT}", first)
        for proc in first:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        first_codes = procs.wait(first)
        first_log = procs.logs(first)
        resumed = procs.launch(
            "resumed",
            [[*two, "--resume", "--export", str(tmp / "out"), "--metrics-file", str(tmp / "resumed.jsonl")]]
            * 2,
            2,
            coordinator_env=True,
        )
        resumed_codes = procs.wait(resumed)
        assert resumed_codes == [0, 0], procs.logs(resumed)
        assert procs.wait(reference) == [0], procs.logs(reference)
        seconds = time.monotonic() - start
    finally:
        procs.close()
    return {
        "tmp": tmp,
        "first_codes": first_codes,
        "first_log": first_log,
        "seconds": seconds,
    }


def test_two_processes_match_one_process(runs):
    tmp = runs["tmp"]
    ref = metrics(tmp / "ref.jsonl")
    first, resumed = metrics(tmp / "first.jsonl"), metrics(tmp / "resumed.jsonl")
    assert sorted(ref) == list(range(STEPS))
    assert len(set(ref.values())) == STEPS  # it trains: every step's loss differs
    # Killed right after the step-3 checkpoint; the resumed run starts exactly there.
    assert runs["first_codes"] == [-signal.SIGKILL] * 2, runs["first_log"]
    # Params split over each host's 2 devices ("fsdp"), the batch over the hosts and devices ("data").
    assert "mesh {'data': 2, 'fsdp': 2} on 4 cpu device(s), 2 host(s)" in runs["first_log"]
    assert set(range(SAVE_AT)) <= set(first)
    assert min(resumed) == SAVE_AT and sorted(resumed) == list(range(SAVE_AT, STEPS))
    for step, loss in {**first, **resumed}.items():
        assert loss == pytest.approx(ref[step], abs=1e-5), step


def test_two_process_export_matches_one_process(runs):
    from safetensors.numpy import load_file

    tmp = runs["tmp"]
    ref, out = (
        load_file(str(tmp / "ref" / "model.safetensors")),
        load_file(str(tmp / "out" / "model.safetensors")),
    )
    assert sorted(ref) == sorted(out) and "logit_bias" not in out
    assert max(float(np.max(np.abs(ref[k] - out[k]))) for k in ref) < 1e-5
    initial = clip_config("micro").logit_scale_init_value
    assert abs(float(out["logit_scale"]) - initial) > 1e-3  # trained (from SigLIP's log 10)
    assert (
        json.load(open(tmp / "out" / "config.json"))["projection_dim"] == clip_config("micro").projection_dim
    )


def test_hosts_seeing_different_files_stop_together(setup, tmp_path):
    tmp, common = setup
    partial = tmp_path / "partial"
    shutil.copytree(tmp / "shards", partial)
    os.remove(partial / "s-005.tar")  # host 1 misses one file; its glob still matches the rest
    argv = [with_shards(common, str(folder / "*.tar")) for folder in (tmp / "shards", partial)]
    procs = Processes(tmp_path)
    try:
        started = procs.launch("differ", argv, 2)
        codes = procs.wait(started, timeout=90)
        log = procs.logs(started)
    finally:
        procs.close()
    assert codes == [1, 1], log
    for i in range(2):
        err = (tmp_path / f"differ-{i}.err").read_text()
        assert "clip-finetune-flax: error: the hosts do not see the same shards" in err, log
        assert "host 0 (8 files" in err and "host 1 (7 files" in err, err
        assert "Traceback" not in err


def test_a_loader_error_on_one_host_stops_every_host(setup, tmp_path):
    # Stream 2 (host 1's first) reads shards 2 and 6: without captions, it has no usable sample.
    # The files are the same on both hosts, so the start-up check passes and training starts.
    shards = write_shards(str(tmp_path / "shards"), captionless=(2, 6))
    argv = with_shards([*setup[1], *TWO], shards)
    procs = Processes(tmp_path)
    try:
        started = procs.launch("broken", [argv, argv], 2)
        codes = procs.wait(started, timeout=120)
        log = procs.logs(started)
    finally:
        procs.close()
    assert codes == [1, 1], log
    host0, host1 = ((tmp_path / f"broken-{i}.err").read_text() for i in range(2))
    assert "no usable samples" in host1 and "s-002.tar" in host1, log
    assert "loading data failed on host 1 at step 0" in host0 and "no usable samples" in host0, log
    assert "step 1/6" not in (tmp_path / "broken-0.out").read_text()  # stopped before any step's log
