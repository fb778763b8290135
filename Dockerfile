# capi-calico-webhook container image.
#
#   docker build -t REGISTRY/capi-calico-webhook:TAG .        (or: buildah build / podman build, same file)
#
# Two stages: a Rust builder on Debian 12, and Google's distroless "cc" runtime (glibc, libgcc, CA certificates,
# no shell, no package manager) running as the unprivileged user 65532. Why glibc and not a static musl binary on
# distroless/static: musl's allocator is markedly slower under a multi-threaded tokio server, and this binary's
# latency budget (issue 5) is measured on glibc builds; the cc image costs ~20 MB more than static. The binary needs
# no OpenSSL (rustls with ring). Pin both base images by digest in your own build pipeline.
#
# The build uses cache mounts (BuildKit, buildah >= 1.24 and podman understand `RUN --mount=type=cache`); the binary
# is copied out of the cached target directory inside the same RUN.

# Override both for a mirror or a digest-pinned base, e.g.
#   --build-arg BUILDER_IMAGE=registry.example/rust:1.95-bookworm@sha256:... --build-arg RUNTIME_IMAGE=...
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin capi-calico-webhook \
    && install -D -m 0755 target/release/capi-calico-webhook /out/capi-calico-webhook

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="capi-calico-webhook" \
      org.opencontainers.image.description="Admission webhook for Calico settings on Cluster API clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/capi-calico-webhook /usr/local/bin/capi-calico-webhook
# Numeric, so that Kubernetes' runAsNonRoot can check it without resolving a user name.
USER 65532:65532
# 8443: admission HTTPS (/mutate, /validate, /healthz, /readyz); 9090: plain-HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/capi-calico-webhook"]
CMD ["serve", "--listen=0.0.0.0:8443", "--metrics-listen=0.0.0.0:9090"]
