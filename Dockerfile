# One image for every pipeline step (KFP/Vertex) and every training worker (TFJob replicas).
# Same pins as the README path: requirements.lock installed with --no-deps, then this project.
FROM python:3.10.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# Dependencies first: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN python -m pip install pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
 && python -m pip install --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY bresnet ./bresnet
COPY components ./components
COPY pipeline ./pipeline
RUN python -m pip install --no-deps --no-build-isolation . \
 && python -m pip check \
 && python -c "import bresnet, components, pipeline.cli"

# No credentials in the image: GCS/Kubernetes access comes from the environment (Workload Identity / ADC).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
USER 10001
WORKDIR /home/app

CMD ["python", "-m", "pipeline", "--help"]
