# syntax=docker/dockerfile:1
# gpulab in one container. Build and run (NVIDIA Container Toolkit on the host):
#   docker build -t gpulab .
#   docker run --gpus all -p 8080:8080 -v gpulab-data:/var/lib/gpulab gpulab

# ---- build: the same `cargo xtask dist` a developer runs (setup, trunk, release build) ----
FROM rust:1.95-bookworm AS build
# npm installs wasm-opt; everything else comes from `cargo xtask setup`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep crates, compiled dependencies and the tools `cargo xtask setup`
# installs (trunk, wasm-bindgen, wasm-opt) from one build to the next. They are not part of
# the image, so the artefacts are copied out within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/opt/xtask-tools \
    --mount=type=cache,target=/src/.tools \
    --mount=type=cache,target=/src/target \
    CARGO_INSTALL_ROOT=/opt/xtask-tools cargo xtask dist \
 && mkdir -p /out \
 && cp target/release/gpulab /out/gpulab \
 && cp -r dist /out/dist

# ---- run: the CUDA runtime libraries (NVRTC, cuBLAS); the host provides the driver ----
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --home-dir /var/lib/gpulab --no-create-home \
        --shell /usr/sbin/nologin gpulab \
 && mkdir -p /var/lib/gpulab \
 && chown gpulab:gpulab /var/lib/gpulab
COPY --from=build /out/gpulab /usr/local/bin/gpulab
COPY --from=build /out/dist /usr/share/gpulab/dist
# The base image demands a driver for CUDA >= 12.8. Through CUDA minor version
# compatibility the 12.8 libraries also run on any CUDA 12 driver (>= 525.60.13), so
# accept those too; the README names the limits.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=12.0"
USER gpulab
WORKDIR /var/lib/gpulab
VOLUME /var/lib/gpulab
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/api/health || exit 1
CMD ["gpulab", "serve", "--addr", "0.0.0.0:8080", "--data-dir", "/var/lib/gpulab", "--static-dir", "/usr/share/gpulab/dist"]
