# The `panaversity` binary (both services) on a small non-root Debian runtime.
#
#   docker build -t panaversity .          # compiles in RUST_IMAGE (rust:1.95-bookworm)
#
# Without a registry (air-gapped, or this repository's build machines): build the binary on a
# bookworm-compatible host and take it from the build context, on a base image made locally from
# Debian packages (docs/BENCHMARKS.md, "Container image", has every command):
#
#   cargo build --release --locked -p panaversity && strip target/release/panaversity
#   podman build --format docker --network=host --build-arg BINARY=prebuilt \
#       --build-arg RUST_IMAGE=localhost/debian-bookworm-local \
#       --build-arg RUNTIME_IMAGE=localhost/debian-bookworm-local -t panaversity .
#
# Plain stages only (no stage chosen through an ARG), so docker (BuildKit or not) and
# podman/buildah read it alike.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# `build` (default): compile here. `prebuilt`: take target/release/panaversity from the build
# context (nothing is compiled, so RUST_IMAGE may then be any bookworm image).
ARG BINARY=build
WORKDIR /src
COPY . .
RUN mkdir -p /out && if [ "$BINARY" = prebuilt ]; then \
        cp target/release/panaversity /out/panaversity; \
    else \
        cargo build --release --locked -p panaversity \
        && cp target/release/panaversity /out/panaversity && strip /out/panaversity; \
    fi

FROM ${RUNTIME_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/panaversity --create-home panaversity \
    && install -d -o panaversity -g panaversity /var/lib/panaversity/data
COPY --from=build /out/panaversity /usr/local/bin/panaversity
USER panaversity
WORKDIR /var/lib/panaversity
# The data dir is absolute, so `docker exec … panaversity fs keys create …` finds the server's
# store. Bound to every address: set PANAVERSITY_PUBLIC_URL (or PANAVERSITY_ALLOWED_HOSTS) to the
# name clients use, or /mcp answers 403 FORBIDDEN_HOST naming those settings.
ENV PANAVERSITY_DATA_DIR=/var/lib/panaversity/data \
    PANAVERSITY_BIND=0.0.0.0:8000 \
    PANAVERSITY_LOG_FORMAT=json
VOLUME /var/lib/panaversity/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/local/bin/panaversity"]
CMD ["serve"]
