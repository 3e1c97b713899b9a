"""Commands whose issues have not landed yet: they exist, say so, and exit 2."""
from __future__ import annotations

import click

from vssl_cli.errors import UsageProblem

PENDING = {
    "pretrain": "Self-supervised pretraining of a video encoder on a frame store.",
    "finetune": "Finetune a pretrained encoder with labels.",
    "probe": "Linear-probe evaluation of a frozen encoder.",
    "retrieve": "Nearest-neighbour video retrieval (R@k) with a frozen encoder.",
    "export": "Export a model (TorchScript, ONNX, safetensors) or its embeddings.",
}


def pending_command(name: str, summary: str) -> click.Command:
    @click.command(name, help=f"{summary}\n\nNot implemented yet in this version.",
                   context_settings={"ignore_unknown_options": True,
                                     "allow_extra_args": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args):
        raise UsageProblem(f"'vssl {name}' is not implemented yet")
    return command


COMMANDS = [pending_command(n, s) for n, s in PENDING.items()]
