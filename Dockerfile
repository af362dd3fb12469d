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
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app worker

USER worker

CMD ["python", "worker.py"]
