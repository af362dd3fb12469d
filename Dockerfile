# Worker image: runs `python worker.py` against the Temporal cluster of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (no .venv/.state/tests from the build context).
COPY pyproject.toml README.md worker.py ./
COPY interpreter/ interpreter/
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
# Bytecode compiled at build time: the workflow sandbox re-imports workflows/generic.py for every
# run, and with PYTHONDONTWRITEBYTECODE nothing would cache the compilation (bench/README.md).
RUN pip install . \
    && python -m compileall -q /app \
    && useradd --system --uid 10001 --home-dir /app worker

USER worker

CMD ["python", "worker.py"]
