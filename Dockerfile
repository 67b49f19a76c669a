# The persistence service. Secrets come at run time (API_KEY_FILE, DB_PASSWORD_FILE), never in the image.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer, rebuilt only when the lock changes: the run-time ones only, each file
# checked against its hash.
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock

COPY shared/ shared/
COPY persistence/ persistence/
COPY --chmod=755 wait-for-it.sh .

RUN useradd --create-home --uid 10001 app && mkdir -p /app/data && chown app /app/data
USER app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

CMD ["uvicorn", "persistence.main:create_app", "--factory", "--http", "shared.server:HttpToolsProtocol", "--host", "0.0.0.0", "--port", "8000"]
