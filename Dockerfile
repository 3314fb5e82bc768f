# syntax=docker/dockerfile:1
# Sightline's app image. It installs with the same `make` target as `make run` and `make test` on a
# developer's machine, so CI exercises the image's install steps on every run.
#   docker compose up --build        (see docker-compose.yml; the GPU variant: docker-compose.gpu.yml)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# PyPI's Linux torch is the CUDA build (several GB); PyTorch's own index has the CPU build.
# The GPU variant sets this to empty, which takes PyPI's CUDA build.
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .
# A cache mount keeps pip's downloads (torch above all) between builds when only the code changed.
RUN --mount=type=cache,target=/root/.cache/pip \
    make .venv/.installed TORCH_PIP_ARGS="$TORCH_PIP_ARGS"

# A user of its own; the folders it writes to are volume mount points, and a fresh named volume
# takes its owner from the folder it is mounted on.
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin sightline \
 && mkdir -p /data /models /images \
 && chown sightline:sightline /data /models

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COCOINDEX_DISABLE_USAGE_TRACKING=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    ORT_DISABLE_TELEMETRY=1 \
    IMAGE_DIR=/images \
    DATA_DIR=/data \
    HF_HOME=/models \
    HOST=0.0.0.0 \
    PORT=8000

USER sightline
EXPOSE 8000
CMD ["python", "main.py", "serve"]
