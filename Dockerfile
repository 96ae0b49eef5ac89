# An exact tag, as for every image of docker-compose.yml: a rebuild gets the same Python.
FROM python:3.11.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY app ./app
COPY continuity ./continuity
COPY workflows ./workflows
COPY activities ./activities
COPY playbooks ./playbooks
COPY api ./api
COPY lab ./lab
# A fixed, unprivileged uid: the operator gives it the SSH keys in deploy/ssh/ (its README).
RUN pip install --no-cache-dir . \
    && groupadd --gid 10001 continuity \
    && useradd --uid 10001 --gid continuity --no-log-init --create-home continuity \
    && mkdir -p /var/lib/continuity && chown continuity:continuity /var/lib/continuity
USER 10001:10001
EXPOSE 8000
CMD ["continuity", "api"]
