"""Where labs run it: two torchrun "nodes" on this machine, a worker killed mid-run, and
the trackers, measured against the plain run.

    python bench/cluster.py --frames FRAMES.zarr [--out bench/results/cluster.json]

Reports (CPU, gloo, r3d18-tiny, 32 px, 4-frame clips, global batch 4):
- two nodes x 1 process (c10d rendezvous) against one node x 2 processes and against one
  process: largest weight difference and wall time;
- SIGKILL of one worker after the first checkpoint under ``--max-restarts 1``: the steps
  redone and whether the finished weights equal the uninterrupted run's;
- seconds per step with ``--log-to`` each tracker, as a ratio to no tracker.
The helpers here are also what tests/test_cluster.py launches.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--backbone", "r3d18-tiny", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
        "--set", "clip_len=4", "--set", "stride=1", "--log-every", "1"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nnodes: int, nproc: int, port: int, vssl_args: list[str], *extra: str) -> list[str]:
    """The command line of one torchrun agent ("node") of a c10d rendezvous."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
            "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"127.0.0.1:{port}", "--rdzv-id", f"vssl-{port}", *extra, "-m", "vssl_cli",
            *vssl_args]


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` with its output going to files, not pipes: a pipe nobody reads while
    the run is watched fills up, and a worker blocked writing a log line looks hung."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True,
                            env={**os.environ, **ENV, **(env or {})})
    proc.files = (out, err)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    """Wait for a process ``start`` began; (stdout, stderr)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    texts = []
    for f in proc.files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return texts[0], texts[1]


def run_nodes(nnodes: int, nproc: int, vssl_args: list[str], *extra: str, timeout=600
              ) -> tuple[list[subprocess.CompletedProcess], float]:
    """Start ``nnodes`` agents at once, wait for all; (their results, wall seconds)."""
    port, t0 = free_port(), time.perf_counter()
    procs = [start(torchrun(nnodes, nproc, port, vssl_args, *extra)) for _ in range(nnodes)]
    done = []
    for p in procs:
        out, err = finish(p, timeout)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done, time.perf_counter() - t0


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def worker_of_rank(agent: int, rank: int) -> int | None:
    """The training process of global ``rank`` started by the torchrun agent ``agent``."""
    for pid in descendants(agent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"vssl_cli" in cmd:   # the entry itself
            return pid
    return None


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, rank: int = 1, after_step: int = 2,
                          timeout: float = 300) -> int:
    """SIGKILL the worker of ``rank`` once the run has a checkpoint and has logged a step
    past ``after_step``; returns the step it had logged."""
    partial = run.parent / f".{run.name}.partial"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = logged_steps(partial)
        if (partial / "checkpoint.pt").exists() and steps and steps[-1] > after_step:
            pid = worker_of_rank(proc.pid, rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return steps[-1]
        if proc.poll() is not None:
            raise RuntimeError("the run ended before a worker could be killed")
        time.sleep(0.05)
    raise TimeoutError("no checkpoint to kill after")


def logged_steps(folder: Path) -> list[int]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            pass
    return steps


def max_weight_diff(a: Path, b: Path) -> float:
    import torch
    sa = torch.load(a / "encoder.pt", weights_only=True)
    sb = torch.load(b / "encoder.pt", weights_only=True)
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa
               if sa[k].is_floating_point())


def _pretrain(frames: Path, out: Path, steps: int) -> list[str]:
    return ["pretrain", str(frames), "-o", str(out), *TINY, "--max-steps", str(steps),
            "--optimizer", "sgd", "--lr", "0.001",
            "--checkpoint-every", "2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/cluster.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vssl-bench-cluster"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--log-steps", type=int, default=30)
    args = ap.parse_args()
    import shutil
    shutil.rmtree(args.work, ignore_errors=True)
    w, steps, result = args.work, args.steps, {}

    one = subprocess.run([sys.executable, "-m", "vssl_cli", *_pretrain(args.frames, w / "one",
                                                                        steps)],
                         cwd=ROOT, env={**os.environ, **ENV}, capture_output=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vssl_cli", *_pretrain(args.frames, w / "one2",
                                                                  steps)],
                   cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, check=True)
    result["one_process_s"] = time.perf_counter() - t0
    assert one.returncode == 0
    _, result["one_node_2proc_s"] = run_nodes(1, 2, _pretrain(args.frames, w / "node1", steps))
    _, result["two_nodes_s"] = run_nodes(2, 1, _pretrain(args.frames, w / "node2", steps))
    result["max_diff_two_nodes_vs_one_node"] = max_weight_diff(w / "node1", w / "node2")
    result["max_diff_two_nodes_vs_one_process"] = max_weight_diff(w / "one", w / "node2")
    # The float noise any run has: the same process with 2 threads instead of 1.
    subprocess.run([sys.executable, "-m", "vssl_cli", *_pretrain(args.frames, w / "one_t2",
                                                                  steps)],
                   cwd=ROOT, env={**os.environ, **ENV, "OMP_NUM_THREADS": "2"},
                   capture_output=True, check=True)
    result["max_diff_one_process_1_vs_2_threads"] = max_weight_diff(w / "one", w / "one_t2")

    port = free_port()
    proc = start(torchrun(1, 2, port, _pretrain(args.frames, w / "killed", steps),
                          "--max-restarts", "1"))
    killed_at = kill_after_checkpoint(proc, w / "killed")
    finish(proc)
    logged = logged_steps(w / "killed")
    result.update(killed_at_step=killed_at, restart_rc=proc.returncode,
                  steps_redone=killed_at - 2 * (killed_at // 2),
                  max_diff_restarted_vs_uninterrupted=max_weight_diff(w / "node1", w / "killed"),
                  logged_steps=logged)

    per_step = {name: [] for name in ("none", "tensorboard", "mlflow", "wandb")}
    for rep in range(2):                      # alternated, so drift hits every tracker
        for tracker in per_step:
            extra = [] if tracker == "none" else ["--log-to", tracker]
            out = w / f"log-{tracker}-{rep}"
            env = {**os.environ, **ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
            proc = subprocess.run([sys.executable, "-m", "vssl_cli",
                                   *_pretrain(args.frames, out, args.log_steps), *extra],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode == 0:
                m = json.loads((out / "manifest.json").read_text())["metrics"]
                per_step[tracker].append(m["wall_s"] / m["steps"])
    base = min(per_step["none"])
    result["log_every_step_s_per_step"] = {k: [round(v, 4) for v in vs]
                                           for k, vs in per_step.items()}
    result["log_every_step_ratio_to_none"] = {k: round(min(vs) / base, 3) if vs else None
                                              for k, vs in per_step.items()}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
