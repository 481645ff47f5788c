# apflow-server: the JSON-RPC service with its internal scheduler.
#   docker build -t apflow-server .
#   docker run -p 8000:8000 -e APFLOW_JWT_SECRET=... -e APFLOW_ALLOWED_HOSTS=apflow.example.com \
#     -e APFLOW_DATABASE_URL=postgresql://... apflow-server
# Without APFLOW_DATABASE_URL it uses a SQLite file under APFLOW_HOME (mount a volume there).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY apflow_server ./apflow_server
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin apflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER apflow
WORKDIR /home/apflow
ENV APFLOW_HOME=/home/apflow/.apflow \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# Migrations run at start (serialised between replicas by a database lock). A public bind
# needs APFLOW_JWT_SECRET and APFLOW_ALLOWED_HOSTS (the names clients use): without them the
# server refuses to start. /healthz and /readyz answer any Host, for probes.
CMD ["apflow", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
