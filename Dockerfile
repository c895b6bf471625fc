# syntax=docker/dockerfile:1
# Build: docker build -t amperity-operator .
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole tree: Cargo.toml names test targets whose files must exist.
COPY . .
RUN cargo build --release --locked --bin amperity-operator \
 && strip target/release/amperity-operator

# Distroless with glibc, no shell, running as the unprivileged user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/amperity-operator /amperity-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/amperity-operator"]
CMD ["run"]
