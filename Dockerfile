# syntax=docker/dockerfile:1
# One multi-stage build for the three Zori images; pick one with --target:
#   docker build --target zori-operator -t ghcr.io/zori-k8s/zori-operator:0.1.0 .
#   docker build --target zori-ingest   -t ghcr.io/zori-k8s/zori-ingest:0.1.0 .
#   docker build --target zori-api      -t ghcr.io/zori-k8s/zori-api:0.1.0 .
# These names are the defaults of the Helm chart (image.repository) and of the operator
# (--default-image-repository ghcr.io/zori-k8s, tag = version). Runtime images are distroless
# (glibc, CA certificates, no shell, no package manager) and run as UID/GID 65532. Everything the
# binaries need at run time (tracker script, migrations, dashboard) is compiled into them.

# The toolchain the workspace and its Cargo.lock build with (some locked crates need 1.89+).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p zori-ingest -p zori-api -p zori-operator \
 && mkdir -p /out \
 && cp target/release/zori-ingest target/release/zori-api target/release/zori-operator /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/zori-k8s/zori" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Zori"
USER 65532:65532

FROM runtime AS zori-ingest
LABEL org.opencontainers.image.title="zori-ingest" \
      org.opencontainers.image.description="Zori tracking endpoint"
COPY --from=build /out/zori-ingest /usr/local/bin/zori-ingest
EXPOSE 1324
ENTRYPOINT ["/usr/local/bin/zori-ingest"]

FROM runtime AS zori-api
LABEL org.opencontainers.image.title="zori-api" \
      org.opencontainers.image.description="Zori stream consumer, Stripe webhooks and reports API"
COPY --from=build /out/zori-api /usr/local/bin/zori-api
EXPOSE 1323
ENTRYPOINT ["/usr/local/bin/zori-api"]

# Last, so that a plain `docker build .` makes the operator image. `run` is the default command;
# `docker run --rm ghcr.io/zori-k8s/zori-operator:0.1.0 crd` prints the CRD.
FROM runtime AS zori-operator
LABEL org.opencontainers.image.title="zori-operator" \
      org.opencontainers.image.description="Zori Kubernetes operator"
COPY --from=build /out/zori-operator /usr/local/bin/zori-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/zori-operator"]
CMD ["run"]
