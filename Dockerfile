# One image for every pipeline step (KFP/Vertex), every training worker (TFJob replicas) and every Dataflow worker
# (as `sdk_container_image`). Same pins as the README path: requirements.lock installed with --no-deps, then this
# project.
#
# Beam's SDK harness boot entrypoint, from the Beam SDK image of the pinned Beam and Python (Dataflow's documented
# multi-stage way: https://cloud.google.com/dataflow/docs/guides/build-container-image). A test keeps this tag in
# step with apache-beam in requirements.lock and with the Python below.
FROM apache/beam_python3.10_sdk:2.74.0 AS beam-boot

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

COPY --from=beam-boot /opt/apache/beam /opt/apache/beam

# No credentials in the image: GCS/Kubernetes access comes from the environment (Workload Identity / ADC).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
USER 10001
WORKDIR /home/app

# A Dataflow (or portable runner) worker starts the image as it is: Beam's boot launches the SDK harness. Pipeline
# steps and training replicas always give their own command (KFP's container spec, the TFJob's), which replaces
# this entrypoint; by hand: docker run --entrypoint python IMAGE -m pipeline --help
ENTRYPOINT ["/opt/apache/beam/boot"]
