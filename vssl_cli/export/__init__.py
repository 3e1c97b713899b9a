"""Exports of a trained encoder: TorchScript, ONNX (checked against PyTorch), safetensors,
and per-video embeddings with their ids (npy, HDF5 or Zarr)."""
