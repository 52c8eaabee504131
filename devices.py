"""Devices, mixed precision and data parallelism: the engine room of implementation.py's training loop.

The paper trains one model on many GPUs with synchronous SGD (§4.1): every GPU holds a copy of the model and
a share of the minibatch, the gradients are summed across GPUs (an all-reduce) before every step, and all
copies take the same step. This module holds what that needs at laptop scale, so that the lesson module can
stay the paper:

    pick_device, amp_dtype, grad_scaler       CUDA, Apple MPS or the CPU; mixed precision (``--amp``)
    distributed_world, init_distributed,      joining the processes that ``torchrun`` starts, wrapping the
    distribute, shard_loss, any_process       model in DistributedDataParallel, weighting each share's loss
    SumOverProcesses, global_batch_moments    BatchNorm statistics over the *global* batch (§3.2 under §4.1)

``implementation.py`` imports these names, so ``implementation.pick_device`` and the rest keep working.
This module imports nothing from it. ``torchrun --nproc_per_node N train_minimal.py ...`` starts N processes.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def mps_is_available() -> bool:
    """Whether Apple's Metal GPU backend (MPS, Apple-silicon Macs) can be used by this torch build."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on: ``"auto"`` takes CUDA, else Apple MPS, else the CPU.

    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are taken as asked; one that is absent, or a name
    that is none of these, raises ``ValueError`` saying what to use instead.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for, but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered 0 to {torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps" and not mps_is_available():
        raise ValueError(
            f"--device {name} was asked for, but Apple's MPS backend is not available (it needs an "
            "Apple-silicon Mac and a torch build with MPS); use --device cpu"
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported here: use auto, cpu, cuda, cuda:N or mps")
    return device


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype of mixed precision (``--amp``) on ``device``.

    bfloat16 has float32's exponent range (8 bits) with fewer mantissa bits, so activations and gradients
    neither overflow nor underflow and no loss scaling is needed: it is used on CUDA GPUs that support it
    (Ampere and later) and on the CPU. Older GPUs get float16, whose narrow range needs a ``GradScaler``
    (``grad_scaler``). On the CPU, bf16 is faster only where the hardware has bf16 instructions (AMX,
    AVX-512 BF16); elsewhere it is emulated and slower. Apple's MPS is refused: untested here.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise ValueError(f"--amp (mixed precision) runs on CUDA or the CPU, not on {device.type}; drop --amp")


def grad_scaler(device: torch.device | str, amp: bool) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` when ``amp`` computes in float16 (small gradients would underflow to 0), else None.

    The scaler multiplies the loss by a large factor before ``backward`` and divides the gradients by it
    before the step; it lowers the factor (and skips that step) when a gradient overflows.
    """
    device = torch.device(device)
    if amp and amp_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


# --- Data parallelism with torchrun (§4.1) ---
# PyTorch's DistributedDataParallel (DDP) does the gradient all-reduce during the backward pass. What is
# ours: the batch plan (``implementation.distributed_batches``: SortaGrad over the global batch), the loss
# weighting that makes the update exactly the global batch's (``shard_loss``), and BatchNorm statistics
# over the global batch (``global_batch_moments``).


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "auto") -> torch.device:
    """This process's device; under torchrun, also join the process group (NCCL on CUDA, gloo on CPU).

    torchrun starts one process per GPU and tells each where it stands in environment variables:
    ``RANK`` (0 to WORLD_SIZE - 1 over all nodes), ``WORLD_SIZE``, ``LOCAL_RANK`` (which GPU of this
    node is its own) and ``MASTER_ADDR``/``MASTER_PORT`` to meet the others at. Without them (plain
    ``python``) this is ``pick_device(device)`` and no group is joined.
    """
    chosen = pick_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return chosen
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"torchrun started local rank {local_rank}, but this node has {torch.cuda.device_count()} "
                "CUDA GPU(s): set --nproc_per_node to at most the number of GPUs"
            )
        chosen, backend = torch.device("cuda", local_rank), "nccl"  # one GPU per process
        torch.cuda.set_device(chosen)
    elif chosen.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"torchrun runs on CUDA GPUs (NCCL) or CPUs (gloo), not on {chosen.type!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(dist.destroy_process_group)  # leave the group cleanly when the process ends
    return chosen


def distribute(model: nn.Module) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` when there are several processes, else ``model``.

    DDP broadcasts rank 0's weights at the start (so every copy begins equal) and averages the gradients
    over the processes during ``backward``. ``forward_sync_buffers=False``: the BatchNorm running
    estimates need no broadcast before every forward, as every process updates them from the same global
    statistics (they are still copied from rank 0 once, at the start). Train through the wrapper; save,
    load and evaluate the model itself.
    """
    if distributed_world()[1] == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, forward_sync_buffers=False
    )


def share_of_batches(plan: list[list[int]], lengths, rank: int, world_size: int) -> list[list[int]]:
    """This process's share of each global minibatch of ``plan`` (``implementation.sortagrad_batches``).

    The plan is the same on every process (the seed and epoch fix it), so one step on N processes trains on
    exactly the utterances one process would train on in that step. Each global batch (its utterances
    sorted by length) is dealt out like cards, ``batch[rank::world_size]``: every process gets the same
    number of utterances (+-1) with a similar mix of lengths, so none waits long for the others at the
    gradient all-reduce. A global batch smaller than ``world_size`` (the last one, when the data does not
    divide evenly) joins its neighbour, so every process has work at every step. Over the processes each
    utterance appears exactly once per epoch; epoch 0 stays globally sorted.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if len(lengths) < world_size:
        raise ValueError(f"{len(lengths)} utterances cannot keep {world_size} processes busy")
    merged = [list(batch) for batch in plan]
    # Only the last batch of a pool can be short, and only the last pool is not whole: at most one.
    for index in reversed(range(len(merged))):
        if len(merged[index]) < world_size:  # too small to share: join the batch before it (or after)
            short = merged.pop(index)
            merged[max(index - 1, 0)] += short
    shares = []
    for batch in merged:
        batch = sorted(batch, key=lambda i: (lengths[i], i))  # a joined batch is sorted again
        shares.append(batch[rank::world_size])
    return shares


def shard_loss(loss: Tensor, value: float, count: int) -> tuple[Tensor, float]:
    """``(loss to backpropagate, the global batch's mean loss)`` for this process's ``count`` utterances.

    ``loss`` (its float ``value``) is the mean over this process's share. DDP *averages* gradients over
    the processes, and shares may differ by one utterance, so each share's loss is weighted by
    ``count * world_size / global_count``: the average is then the gradient of the global batch's mean
    loss, the update one process would make. The global mean (NaN or inf if any share's is) is the same
    on every process, so all of them skip a bad batch or none does.
    """
    totals = torch.tensor([value * count, float(count)], dtype=torch.float64, device=loss.device)
    dist.all_reduce(totals)  # sums over the processes
    global_sum, global_count = totals.tolist()
    return loss * (count * dist.get_world_size() / global_count), global_sum / global_count


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (Ctrl-C reaches them at different moments).

    A collective under torchrun: every process must call it at the same point, then all act alike.
    """
    if distributed_world()[1] == 1:
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor([float(bool(flag))], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class SumOverProcesses(torch.autograd.Function):
    """``y = x_0 + x_1 + ... + x_{N-1}`` over the N processes (an all-reduce), with its gradient.

    Every process gets the same ``y`` and computes its own loss ``L_r`` from it; the loss trained on is
    the sum (DDP averages it), so ``dL/dx_r = sum_s dL_s/dy``: the backward is an all-reduce too, as in
    ``nn.SyncBatchNorm``. (``torch.distributed.nn.functional.all_reduce`` does the same and is
    deprecated in torch 2.14; this is that function, written out.)
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


def global_batch_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``implementation.masked_moments`` per feature (last axis) over *every* process's shard.

    Each process holds a shard of the global minibatch, and BatchNorm must see the global batch, as one
    process would. Two all-reduces, the same two passes one process makes: the sums and valid-value
    counts give the global mean, then the squared deviations from it give the variance (a single pass of
    sums of squares, E[x^2] - E[x]^2, loses digits in float32 when the mean is large against the spread).
    The sums are differentiable (``SumOverProcesses``), so every process's frames get the gradient of the
    global statistics. The first pass runs in float64 so that counts beyond float32's 2^24 stay exact.
    Returns ``(mean (I,), biased var (I,), count)``, ``count`` the valid values per feature.
    """
    valid = mask[..., None]  # broadcasts against x
    dims = tuple(range(x.dim() - 1))
    count = torch.broadcast_to(mask, x.shape[:-1]).sum()
    x = x.masked_fill(~valid, 0.0)  # padding never counts
    sums = SumOverProcesses.apply(torch.cat([x.sum(dim=dims).double(), count.double()[None]]))  # (I + 1,)
    total = sums[-1].detach()  # valid values per feature in the global batch
    mean = (sums[:-1] / total).to(x.dtype)  # (I,)
    deviations = (x - mean).masked_fill(~valid, 0.0).square().sum(dim=dims)  # (I,)
    var = SumOverProcesses.apply(deviations) / total.to(x.dtype)  # (I,), biased
    return mean, var, total.round().long()  # a count like the one-process one
