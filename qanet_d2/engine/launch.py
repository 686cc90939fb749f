"""Multi-process launch that also works without CUDA: detectron2 v0.6's ``launch`` asserts CUDA
and uses NCCL, so without CUDA ``--num-gpus N`` spawns N CPU processes over gloo instead, with
detectron2's local process group set up the same way.
"""
import gc
import logging

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _find_free_port
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(), timeout=DEFAULT_TIMEOUT):
    """Same signature as :func:`detectron2.engine.launch`; ``num_gpus_per_machine`` counts
    processes, which run on CPU (gloo) when CUDA is not available."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available():
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout)

    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url must be given for multi-machine jobs")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info("CUDA is not available: launching %d CPU processes over gloo (%s)", num_gpus_per_machine, dist_url)
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * num_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout)
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Each process gets its share of the cores.
    torch.set_num_threads(max(1, torch.get_num_threads() // num_per_machine))
    comm.synchronize()
    try:
        main_func(*args)
        comm.synchronize()  # no rank tears down while another still talks to it
    finally:
        _destroy_process_groups()


def _destroy_process_groups():
    """Destroy every process group and drop detectron2's references to them now: destructed
    at interpreter shutdown, gloo's threads abort the process."""
    comm._LOCAL_PROCESS_GROUP = None
    cached = getattr(comm, "_get_global_gloo_group", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
