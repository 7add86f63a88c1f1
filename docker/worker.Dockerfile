# A GPU worker: PyPI's torch 2.13.0 wheel bundles the CUDA runtime; the host needs only the
# NVIDIA driver and the container toolkit. One worker process per GPU (solo pool).
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 LANDSCOPE_DATA_DIR=/data
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY landscope landscope
COPY server server
COPY worker worker
COPY webapp webapp
COPY alembic alembic
RUN pip install -c constraints.txt .
CMD ["landscope", "worker", "--device", "cuda:0"]
