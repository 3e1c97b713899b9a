"""Pretraining methods by name. A new method is one module plus one line here."""
from __future__ import annotations

from vssl_cli.errors import UsageProblem
from vssl_cli.methods.base import Method
from vssl_cli.methods.ctrlaug import CtrlAug
from vssl_cli.methods.simclr import SimCLR
from vssl_cli.methods.tce import TCE
from vssl_cli.methods.tclr import TCLR
from vssl_cli.methods.teg import TeG
from vssl_cli.methods.vthcl import VTHCL

METHODS: dict[str, type[Method]] = {m.name: m for m in (SimCLR, TCLR, VTHCL, CtrlAug, TeG, TCE)}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageProblem(f"unknown method {name!r}; choose from "
                           f"{', '.join(sorted(METHODS))}") from None
