# The ModelServing image: one image for the operator and the sidecar, two entry
# points (`modelserving operator`, `modelserving sidecar`).
#
# `docker build .` works as it is: the base defaults to the Python slim image and
# the wheels are built in the first stage. tools/build_image.py (`make image`)
# builds the same file without a Docker engine or network: it passes a base made
# from Debian's packages as BASE_IMAGE and hands over wheels built on the host in
# wheels/, which the first stage then installs as they are.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY . /src
# The project and its dependencies are installed from wheels only (--no-index),
# into a virtualenv that is copied whole into the final stage. pip and setuptools
# leave the virtualenv afterwards: nothing at run time installs or builds.
RUN set -eu; \
    if [ ! -d /src/wheels ]; then python3 -m pip wheel --wheel-dir /src/wheels /src; fi; \
    python3 -m venv /opt/modelserving; \
    /opt/modelserving/bin/python -m pip install --no-index --find-links /src/wheels modelserving; \
    /opt/modelserving/bin/python -m pip uninstall --yes pip setuptools wheel

# ---------------------------------------------------------------- final stage
FROM ${BASE_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="modelserving" \
      org.opencontainers.image.description="ModelServing operator and sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 modelserving \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin modelserving
COPY --from=build /opt/modelserving /opt/modelserving
# Read-only root filesystem: bytecode was compiled at install and is never
# written at run time; HOME and the temporary directory are /tmp, which the
# chart mounts as an emptyDir.
ENV PATH=/opt/modelserving/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LANG=C.UTF-8
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["modelserving"]
CMD ["--help"]
