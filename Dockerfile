# Multi-stage build: dependencies are compiled in a cached layer of their own.
#   docker build -t sluice .                        # embedded store, Redis support
#   docker build --build-arg FEATURES=otel -t sluice:otel .   # + OpenTelemetry export
#   --build-arg REVISION=$(git rev-parse --short=12 HEAD) names the revision
#   in sluice_build_info and --version (the context has no .git).
FROM rust:1-bookworm AS build
ARG FEATURES=""
ARG REVISION=""
ENV SLUICE_REVISION=$REVISION
# The image's binary carries no debug info (the repository's release profile
# keeps some for profiling): about 57 MB smaller.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
COPY client/Cargo.toml client/Cargo.toml
COPY vendor vendor
# Every workspace member's manifest, with stub sources for every target a
# manifest names: cargo loads the whole workspace even to build one binary.
RUN mkdir -p src actors/src bench/src client/src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch actors/src/lib.rs client/src/lib.rs && echo 'fn main() {}' > bench/src/main.rs \
 && echo 'fn main() {}' > benches/token_verify.rs \
 && cargo build --release --bin sluice ${FEATURES:+--features $FEATURES} \
 && rm -rf src actors/src bench/src client/src benches
COPY . .
RUN touch src/main.rs src/lib.rs actors/src/lib.rs client/src/lib.rs \
 && cargo build --release --bin sluice ${FEATURES:+--features $FEATURES}

FROM debian:bookworm-slim
# CA certificates: rediss:// verifies the server against the system store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sluice sluice \
 && mkdir -p /var/lib/sluice /etc/sluice && chown sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config/docker.toml /etc/sluice/sluice.toml
USER sluice
VOLUME /var/lib/sluice
EXPOSE 8080
# No ENV for listen or data_dir: they are in the config file, so a mounted
# file or another --config is not silently beaten by baked-in variables;
# SLUICE__SECTION__KEY variables set at `docker run` still override it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/sluice", "health", "--url", "http://127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/sluice.toml"]
