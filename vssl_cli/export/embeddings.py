"""Per-video embeddings (mean over N uniformly spaced clips) with ids, labels and splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMATS = ("npy", "h5", "zarr")


def write_embeddings(path_stem: Path, fmt: str, ids: list[str], labels: list[str | None],
                     splits: list[str | None], vectors: np.ndarray) -> list[str]:
    """Write the table; returns the file names created."""
    table = {"ids": ids, "labels": labels, "splits": splits}
    if fmt == "npy":
        np.save(path_stem.with_suffix(".npy"), vectors.astype(np.float32))
        path_stem.with_suffix(".json").write_text(json.dumps(table))
        return [path_stem.with_suffix(".npy").name, path_stem.with_suffix(".json").name]
    text = {k: np.array(["" if v is None else v for v in vals], dtype=object)
            for k, vals in table.items()}
    if fmt == "h5":
        import h5py
        out = path_stem.with_suffix(".h5")
        with h5py.File(out, "w") as f:
            f["embeddings"] = vectors.astype(np.float32)
            for k, vals in text.items():
                f.create_dataset(k, data=vals.astype(str).tolist(),
                                 dtype=h5py.string_dtype())
        return [out.name]
    import zarr
    out = path_stem.with_suffix(".zarr")
    group = zarr.open_group(str(out), mode="w")
    group.create_array("embeddings", data=vectors.astype(np.float32))
    for k, vals in text.items():
        group.create_array(k, shape=vals.shape, dtype=str)[:] = vals
    return [out.name]
