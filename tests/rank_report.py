"""A callback a config names by class path (a subprocess run puts tests/ on PYTHONPATH): each rank
writes where it ran and that it finished, so a test can check a multi-process launch.

`RankReport(dir)` writes `dir/rank-<global rank>.json` at the end of `fit`, on every rank:
global, local and node rank, world size, `num_nodes`, the data-parallel rank and size the data
modules use (`eva_train.data.datamodules.data_parallel_rank`), the cluster environment Lightning
detected (TorchElasticEnvironment under torchrun, LightningEnvironment when Lightning launched
the processes itself), the steps trained, and the rank's `torch.distributed` view.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch.distributed as dist
from eva_train.data.datamodules import data_parallel_rank


class RankReport(L.Callback):
    def __init__(self, dir: str) -> None:
        self.dir = dir

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dp_rank, dp_size = data_parallel_rank(trainer)
        report = {
            "global_rank": trainer.global_rank, "local_rank": trainer.local_rank, "node_rank": trainer.node_rank,
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices": trainer.num_devices,
            "data_parallel_rank": dp_rank, "data_parallel_size": dp_size,
            "cluster_environment": type(trainer.strategy.cluster_environment).__name__,
            "dist_rank": dist.get_rank(), "dist_world_size": dist.get_world_size(),
            "global_step": trainer.global_step,
        }
        path = Path(self.dir) / f"rank-{trainer.global_rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report))
