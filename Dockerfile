# Multi-stage build: dependencies are compiled in a cached layer of their own.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
COPY vendor vendor
RUN mkdir -p src actors/src bench/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch actors/src/lib.rs && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --bin sluice \
 && rm -rf src actors/src bench/src
COPY . .
RUN touch src/main.rs src/lib.rs actors/src/lib.rs && cargo build --release --bin sluice

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/sluice sluice \
 && mkdir -p /var/lib/sluice && chown sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER sluice
VOLUME /var/lib/sluice
EXPOSE 8080
# Inside a container the broker must listen on all interfaces; the embedded
# store lives on the volume.
ENV SLUICE__LISTEN=0.0.0.0:8080 SLUICE__DATA_DIR=/var/lib/sluice
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
