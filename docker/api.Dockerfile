# The API and the dashboard. The server never imports torch, but the package depends on it
# (the same distribution holds the worker), so this image takes the small CPU build.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 LANDSCOPE_DATA_DIR=/data
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY landscope landscope
COPY server server
COPY worker worker
COPY webapp webapp
COPY alembic alembic
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt .
EXPOSE 8000
# `landscope api` applies migrations before serving (unless --no-migrate).
CMD ["landscope", "api", "--host", "0.0.0.0", "--port", "8000"]
HEALTHCHECK --interval=10s --timeout=5s --retries=6 CMD python -c \
  "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"
