# Worker and gateway image: `python worker.py` (default) or `wfa serve`, against the Temporal cluster
# and PostgreSQL of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (no .venv/.state/tests from the build context), and only its runtime
# dependencies: the dev server, the test server and the embedded PostgreSQL are the `local` extra,
# which `make demo` and `make test` install and this image does not.
COPY pyproject.toml README.md worker.py ./
COPY interpreter/ interpreter/
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
COPY gateway/ gateway/
# Bytecode compiled at build time: the workflow sandbox re-imports the sandboxed workflows' modules
# (the event mailbox) for every run, and with PYTHONDONTWRITEBYTECODE nothing would cache the
# compilation (bench/README.md).
RUN pip install . \
    && python -m compileall -q /app \
    && useradd --system --uid 10001 --home-dir /app worker

USER worker

CMD ["python", "worker.py"]
