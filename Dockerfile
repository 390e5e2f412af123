# Multi-stage build of the `panaversity` binary (both services). Not built in this repository's CI
# (no Docker engine on the build machines); kept in step with the README's settings.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p panaversity && strip target/release/panaversity

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/panaversity --create-home panaversity
COPY --from=build /src/target/release/panaversity /usr/local/bin/panaversity
USER panaversity
WORKDIR /var/lib/panaversity
ENV PANAVERSITY_DATA_DIR=/var/lib/panaversity/data \
    PANAVERSITY_BIND=0.0.0.0:8000 \
    PANAVERSITY_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/local/bin/panaversity"]
CMD ["serve"]
