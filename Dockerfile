# CUDA-capable image: PyTorch with CUDA and cuDNN, Debian's ffmpeg, and vssl.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/vssl
COPY . .
RUN pip install --no-cache-dir . && vssl --version
WORKDIR /data
ENTRYPOINT ["vssl"]
CMD ["--help"]
