FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY app ./app
COPY continuity ./continuity
COPY workflows ./workflows
COPY activities ./activities
COPY playbooks ./playbooks
COPY api ./api
COPY lab ./lab
RUN pip install --no-cache-dir . && useradd --system --create-home continuity \
    && mkdir -p /var/lib/continuity && chown continuity /var/lib/continuity
USER continuity
EXPOSE 8000
CMD ["continuity", "api"]
