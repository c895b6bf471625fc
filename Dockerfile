# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=0.1.0 -t amperity-operator:0.1.0 .
# Released images are built by .github/workflows/release.yml for linux/amd64 and
# linux/arm64 (one build per platform, emulated by QEMU for the other).
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole tree: Cargo.toml names test targets whose files must exist.
COPY . .
RUN cargo build --release --locked --bin amperity-operator \
 && strip target/release/amperity-operator

# Distroless with glibc, no shell, running as the unprivileged user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
# The release's version without the "v" (the release workflow passes the tag's).
ARG VERSION=dev
LABEL org.opencontainers.image.title="amperity-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs Amperity workflows declared as AmperityWorkflowRun resources" \
      org.opencontainers.image.source="https://github.com/amperity-operator/amperity-operator" \
      org.opencontainers.image.url="https://github.com/amperity-operator/amperity-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/target/release/amperity-operator /amperity-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/amperity-operator"]
CMD ["run"]
