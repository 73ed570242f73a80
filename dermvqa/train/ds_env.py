"""DeepSpeed glue: one process without a launcher, the CPU op build it can skip, ZeRO-3 init kept off builds."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Set the rendezvous variables DeepSpeed expects when no launcher started this process."""
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)


def skip_cpu_shm_build() -> None:
    """On the CPU, skip building DeepSpeed's shared-memory all-reduce op.

    DeepSpeed compiles that C++ op (about 100 s on two cores) when it sets up communication on
    the CPU accelerator. Only `inference_all_reduce` uses it, and that falls back to the process
    group's all_reduce without it; training never calls it.
    """
    import torch

    if torch.cuda.is_available():
        return
    import importlib

    # not `import deepspeed.comm.torch as ...`: the attribute deepspeed.comm.torch is the torch package
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    if hasattr(ds_torch, "build_shm_op"):
        ds_torch.build_shm_op = lambda: None


@contextmanager
def without_zero3_init(args):
    """Build and save whole models inside: ZeRO-3's partitioned init would save empty tensors."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if getattr(args, "hf_deepspeed_config", None) is not None:
            set_hf_deepspeed_config(args.hf_deepspeed_config)


def zero3_partitioned(args) -> bool:
    """Whether these TrainingArguments run ZeRO-3, whose models load straight into per-rank partitions."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not (getattr(args, "deepspeed", None) and is_deepspeed_zero3_enabled()):
        return False
    import deepspeed

    deepspeed.init_distributed()  # zero.Init reads the world size from DeepSpeed's own process group
    return True
