# The controller image: `docker build -t pulsar-autoscaler:0.1.0 .`
#
# Build stage: the toolchain the crate declares (rust-version in Cargo.toml) or newer, and
# Cargo.lock exactly (--locked). TLS is rustls with ring, so the binary needs no OpenSSL.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin pulsar-autoscaler \
    && cp target/release/pulsar-autoscaler /pulsar-autoscaler

# Runtime: distroless with glibc and libgcc (what a Rust binary links), CA certificates, no
# shell, running as the image's nonroot user (65532), which deploy/deployment.yaml also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /pulsar-autoscaler /usr/local/bin/pulsar-autoscaler
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pulsar-autoscaler"]
CMD ["run", "--leader-election"]
