# syntax=docker/dockerfile:1
# One multi-stage build for the three Zori images; pick one with --target:
#   docker build --target zori-operator -t ghcr.io/zori-k8s/zori-operator:0.1.0 .
#   docker build --target zori-ingest   -t ghcr.io/zori-k8s/zori-ingest:0.1.0 .
#   docker build --target zori-api      -t ghcr.io/zori-k8s/zori-api:0.1.0 .
# Runtime images are distroless (glibc, CA certificates, no shell) and run as UID 65532.

FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/zori-ingest target/release/zori-api /out/ \
 && if [ -f target/release/zori-operator ]; then cp target/release/zori-operator /out/; fi

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

FROM runtime AS zori-ingest
COPY --from=build /out/zori-ingest /usr/local/bin/zori-ingest
EXPOSE 1324
ENTRYPOINT ["/usr/local/bin/zori-ingest"]

FROM runtime AS zori-api
COPY --from=build /out/zori-api /usr/local/bin/zori-api
EXPOSE 1323
ENTRYPOINT ["/usr/local/bin/zori-api"]

FROM runtime AS zori-operator
COPY --from=build /out/zori-operator /usr/local/bin/zori-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/zori-operator", "run"]
