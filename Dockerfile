# One image for both services; docker-compose.yml picks the command of each container
# (`producer-service relay`, `email-consumer run`, `producer-service register ...`).

# Pinned to an exact patch release and Debian release so a rebuild gives the same base.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# pyproject.toml names README.md as the long description, so the build needs it too.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY producer_service ./producer_service
COPY email_consumer ./email_consumer

# A virtual environment can be copied whole into the runtime stage, leaving pip's build
# leftovers and the sources behind. Every dependency ships manylinux wheels (psycopg[binary]
# included), so no compiler is needed.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install .


FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric id, so orchestrators that insist on a non-root user (runAsNonRoot) can see it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

# The services default to SQLite files under ./var/; it must be writable by the app user.
WORKDIR /app
RUN mkdir -p /app/var && chown -R app:app /app

USER 10001:10001

# No ENTRYPOINT: each compose service names its console script. Without a command the
# container explains itself instead of doing something surprising.
CMD ["producer-service", "--help"]
