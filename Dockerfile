# syntax=docker/dockerfile:1

# Build stage: build Kindred's wheel and install it, with its dependencies, into a venv.
FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY profiles/ profiles/
COPY identity/ identity/
COPY enrichment/ enrichment/

# No optional extras: in a container Kindred talks to MongoDB via KINDRED_MONGODB_URI.
RUN pip wheel --no-deps -w /wheels . \
    && python -m venv /opt/kindred \
    && /opt/kindred/bin/pip install /wheels/*.whl

# Final stage: just the venv, run as a non-root user.
FROM python:3.12-slim

COPY --from=build /opt/kindred /opt/kindred

RUN groupadd --system --gid 10001 kindred \
    && useradd --system --uid 10001 --gid kindred --no-create-home --shell /usr/sbin/nologin kindred

USER kindred
WORKDIR /tmp

ENV PATH=/opt/kindred/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KINDRED_HOST=0.0.0.0 \
    KINDRED_PORT=8000 \
    KINDRED_ENV=prod \
    KINDRED_LOG_FORMAT=json

EXPOSE 8000

# /readyz answers 503 until MongoDB is reachable; urllib raises on it, so the check fails.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["kindred", "serve"]
