"""Data parallelism with torchrun (§4.1's synchronous SGD), tested on the CPU with gloo and 2 processes.

The oracle is one process: N processes sharing each global batch must take the very update that one
process takes on the whole batch - the same gradient (DDP's all-reduce, our loss weighting) and the same
BatchNorm statistics (our all-reduce of sums and valid-frame counts).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import implementation as ds2

ROOT = Path(__file__).resolve().parents[1]


# ---- the plan: distributed SortaGrad ----------------------------------------------------------------


@pytest.mark.parametrize(
    "count, batch_size, world_size", [(25, 8, 2), (24, 8, 3), (7, 4, 3), (9, 4, 2), (301, 6, 4)]
)
def test_every_utterance_once_per_epoch_over_the_processes(count, batch_size, world_size):
    lengths = np.random.default_rng(count).integers(20, 400, count).tolist()
    for epoch in range(3):
        plans = [
            ds2.distributed_batches(lengths, batch_size, epoch, 5, True, rank, world_size)
            for rank in range(world_size)
        ]
        steps = ds2.steps_per_epoch(count, batch_size, world_size)
        assert [len(plan) for plan in plans] == [steps] * world_size  # same number of steps everywhere
        seen = []
        for step in range(steps):
            shares = [plan[step] for plan in plans]
            sizes = [len(share) for share in shares]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, sizes  # balanced, none idle
            seen += [index for share in shares for index in share]
        assert sorted(seen) == list(range(count))  # each utterance exactly once in the epoch


def test_epoch_0_is_globally_sorted_and_global_batches_are_one_process_batches():
    lengths = np.random.default_rng(1).integers(20, 400, 40).tolist()
    shares = [ds2.distributed_batches(lengths, 8, 0, 0, True, rank, 2) for rank in range(2)]
    global_batches = [sorted(a + b, key=lambda i: (lengths[i], i)) for a, b in zip(*shares, strict=True)]
    flat = [i for batch in global_batches for i in batch]
    assert flat == np.argsort(lengths, kind="stable").tolist()  # batch after batch in sorted order
    for epoch in (0, 1, 2):  # the global batches are exactly one process's batches
        one = ds2.sortagrad_batches(lengths, 8, epoch, 0)
        two = [ds2.distributed_batches(lengths, 8, epoch, 0, True, rank, 2) for rank in range(2)]
        assert [sorted(b) for b in one] == [sorted(a + b) for a, b in zip(*two, strict=True)]
    # and one process gets the one-process plan unchanged
    assert ds2.distributed_batches(lengths, 8, 1, 0) == ds2.sortagrad_batches(lengths, 8, 1, 0)


def test_shares_have_similar_lengths():
    lengths = np.random.default_rng(2).integers(20, 800, 256).tolist()
    for epoch in (0, 1):
        a, b = (ds2.distributed_batches(lengths, 32, epoch, 0, True, rank, 2) for rank in range(2))
        for share_a, share_b in zip(a, b, strict=True):  # the padded length each process computes on
            longest_a, longest_b = max(lengths[i] for i in share_a), max(lengths[i] for i in share_b)
            assert abs(longest_a - longest_b) <= 0.1 * max(longest_a, longest_b)


def test_a_global_batch_smaller_than_the_process_count_is_refused():
    with pytest.raises(ValueError, match="global batch"):
        ds2.distributed_batches([10] * 20, 2, 0, 0, True, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        ds2.distributed_batches([10] * 20, 8, 0, 0, True, 2, 2)


# ---- two processes train as one: DDP + the loss weighting + BatchNorm over the global batch -----------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_tiny() -> dict:
    """A tiny DS2 trained for 2 epochs by ``fit``; in a process group this process trains its shares.

    In float64, so that the two runs differ only by rounding far below any real discrepancy (in float32
    the gradient through BatchNorm, a difference of nearly equal terms, leaves ~1e-4 relative noise).
    """
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 81, 15)  # 15 utterances, batch 6: shares of 3+3, 3+3, 2+1
    generator = torch.Generator().manual_seed(0)
    spectrograms = [torch.randn(161, int(t), generator=generator, dtype=torch.float64) for t in lengths]
    letters = list("abcdefgh ")
    texts = ["".join(rng.choice(letters, int(rng.integers(3, 9)))).strip() or "a" for _ in lengths]
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_hidden=16, rnn_layers=2)).double()
    # SGD, not Adam: Adam divides by the gradient's own size, so float noise in a gradient that should
    # be 0 (a bias cancelled by BatchNorm) would become a full step, and the runs could not be compared.
    config = ds2.TrainConfig(epochs=2, batch_size=6, optimizer="sgd", lr=0.05, seed=1)
    optimizer = ds2.make_optimizer(model, config)
    losses = []
    ds2.fit(
        ds2.distribute(model),
        (spectrograms, texts),
        config,
        optimizer=optimizer,
        on_step=lambda state, loss: losses.append(loss),
        log=None,
    )
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "losses": losses}


def train_tiny_worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        result = train_tiny()
        # Ctrl-C reaches the processes at different moments: they must still agree to stop
        result["any_process"] = [ds2.any_process(rank == 1), ds2.any_process(False)]
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # the children inherit it: 2 processes, 1 thread each
        mp.spawn(train_tiny_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def test_two_processes_end_with_identical_weights_and_statistics(two_process_run):
    first, second = two_process_run
    assert first["weights"].keys() == second["weights"].keys()
    for name, value in first["weights"].items():  # parameters and BatchNorm running estimates alike
        assert torch.equal(value, second["weights"][name]), name
    assert first["losses"] == second["losses"]  # each step reports the global batch's loss
    assert first["any_process"] == second["any_process"] == [True, False]  # a flag on one rank is seen


def test_two_processes_take_the_steps_one_process_takes_on_the_global_batch(two_process_run):
    one = train_tiny()  # no process group here: the whole global batch in one process
    two = two_process_run[0]
    assert len(one["losses"]) == len(two["losses"]) == 6
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)  # CTC values are float32
    assert any(name.endswith("running_var") for name in one["weights"])  # BatchNorm is in the model
    for name, value in one["weights"].items():
        if value.is_floating_point():
            torch.testing.assert_close(two["weights"][name], value, rtol=1e-9, atol=1e-11, msg=name)
        else:  # num_batches_tracked
            assert torch.equal(two["weights"][name], value), name
    moved = max((one["weights"][n] - w.double()).abs().max() for n, w in train_tiny_initial().items())
    assert moved > 1e-2  # the runs really trained: the comparison is not of two untouched models


def train_tiny_initial() -> dict:
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_hidden=16, rnn_layers=2))
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


# ---- the CLI under torchrun: rank 0 writes, every rank resumes ---------------------------------------

TINY = [
    "--train-size", "12", "--dev-size", "4", "--batch-size", "4", "--hidden", "16", "--rnn-layers", "1",
    "--conv-channels", "4", "--lm-sentences", "100", "--beam-width", "2", "--seed", "3", "--device", "cpu",
    "--workers", "1", "--epochs", "1",
]  # fmt: skip


def torchrun(*args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, str(ROOT / "train_minimal.py"), *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_torchrun_two_processes_stop_resume_and_rank_0_writes(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    flags = [*TINY, "--out", str(out), "--cache-dir", str(cache)]
    stopped = torchrun(*flags, "--stop-after", "1")  # 3 global steps per epoch: stop after the first
    assert stopped.stdout.count("model: ") == 1  # one process speaks
    assert stopped.stdout.count("stopped at step 1") == 1
    _, saved = ds2.load_checkpoint(out / "checkpoint.pt")
    assert (saved["epoch"], saved["batch"], saved["step"]) == (0, 1, 1)
    resumed = torchrun(*flags, "--resume", str(out / "checkpoint.pt"))
    assert resumed.stdout.count("resumed from") == 1 and resumed.stdout.count("epoch  1") == 1
    _, saved = ds2.load_checkpoint(out / "checkpoint.pt")
    assert (saved["epoch"], saved["step"]) == (1, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [record["epoch"] for record in metrics["history"]] == [1] and "final" in metrics
    assert (out / "curves.png").is_file() and (out / "lm.arpa").is_file()
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]  # no half-written file


@pytest.mark.slow
def test_torchrun_ctrl_c_stops_both_processes_at_the_same_step_and_rank_0_saves(tmp_path):
    out = tmp_path / "run"
    flags = [*TINY, "--train-size", "48", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.Popen(
        [*command, str(ROOT / "train_minimal.py"), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # tqdm's progress (rank 0's) comes on stderr
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    watchdog = threading.Timer(240, lambda: os.killpg(run.pid, signal.SIGKILL))  # fail, never hang
    watchdog.start()
    seen, sent = b"", False
    while chunk := os.read(run.stdout.fileno(), 4096):
        seen += chunk
        # Once a step is done both processes are training (their Ctrl-C handlers are in place): press it.
        if not sent and re.search(rb"\| *[1-9][0-9]*/12 \[", seen):
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process gets it
            sent = True
    run.wait()
    watchdog.cancel()
    text = seen.decode(errors="replace")
    assert sent, text[-3000:]
    said = re.findall(r"interrupted at step (\d+): saved", text)
    assert len(said) == 1, text[-3000:]  # rank 0 alone speaks
    assert "KeyboardInterrupt" not in text  # no process was cut off mid-step
    _, state = ds2.load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == int(said[0]) and 1 <= state["step"] < 12  # stopped mid-epoch, and saved
