"""``--tensorboard``: the run's metrics records as TensorBoard scalars, beside them.

Optional (the ``tensorboard`` package is an extra). The same scalars as metrics.jsonl:
loss terms under ``loss/``, the rest under ``train/``. A resumed run purges what the
interrupted one logged after its checkpoint, as it trims metrics.jsonl.
"""
from __future__ import annotations

from pathlib import Path

from vssl_cli.errors import UsageProblem

FOLDER = "tensorboard"
TRAIN_KEYS = {"lr", "clips_per_s", "data_wait", "gpu_mem_mib", "epoch"}


def require() -> None:
    """A usage error now, rather than a crash after the data is loaded."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageProblem("--tensorboard needs the tensorboard package: "
                           "pip install 'vssl[tensorboard]'") from None


class TensorBoardLog:
    def __init__(self, run_folder: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_folder / FOLDER),
                                    purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict) -> None:
        step = record["step"]
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(f"{'train' if key in TRAIN_KEYS else 'loss'}/{key}", value,
                                   step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
