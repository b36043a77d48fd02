# gpulab in one container. Build and run (NVIDIA Container Toolkit on the host):
#   docker build -t gpulab .
#   docker run --gpus all -p 8080:8080 -v gpulab-data:/var/lib/gpulab gpulab
#
# No `# syntax=` line: it makes BuildKit pull a frontend image, which fails offline. The
# cache mounts below need BuildKit (DOCKER_BUILDKIT=1 with Docker 20.10; the default since
# Docker 23).
#
# Build arguments (`--build-arg NAME=VALUE`):
#   RUNTIME_BASE  the CUDA runtime image. The default, CUDA 12.8, runs on any CUDA 12 or 13
#                 driver (>= 525.60.13). For CUDA 13 libraries (driver >= 580), use
#                 nvidia/cuda:13.0.0-runtime-ubuntu24.04 with REQUIRE_CUDA="cuda>=13.0".
#   REQUIRE_CUDA  the driver the NVIDIA Container Toolkit demands (NVIDIA_REQUIRE_CUDA).
#   BUILD_BASE    the Rust image the UI and the server are built in.
#   ARTIFACTS     `build` (the default) builds everything in the image; `prebuilt` takes a
#                 server and UI built outside (a context holding prebuilt/gpulab and
#                 prebuilt/dist: what `cargo xtask docker` does, to skip a second build).
ARG BUILD_BASE=rust:1.95-bookworm
ARG RUNTIME_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG ARTIFACTS=build

# ---- build: the same `cargo xtask dist` a developer runs (setup, trunk, release build) ----
FROM ${BUILD_BASE} AS build
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

# ---- prebuilt: the server and UI from the build context (ARTIFACTS=prebuilt) ----
FROM scratch AS prebuilt
COPY prebuilt/gpulab /out/gpulab
COPY prebuilt/dist /out/dist

FROM ${ARTIFACTS} AS artifacts

# ---- run: the CUDA runtime libraries (NVRTC, cuBLAS); the host provides the driver ----
FROM ${RUNTIME_BASE}
# The base image demands the driver of its own CUDA version. Through CUDA minor version
# compatibility the 12.8 libraries also run on any CUDA 12 driver (>= 525.60.13), so accept
# those too; the README names the limits.
ARG REQUIRE_CUDA="cuda>=12.0"
RUN useradd --system --user-group --home-dir /var/lib/gpulab --no-create-home \
        --shell /usr/sbin/nologin gpulab \
 && mkdir -p /var/lib/gpulab \
 && chown gpulab:gpulab /var/lib/gpulab
COPY --from=artifacts /out/gpulab /usr/local/bin/gpulab
COPY --from=artifacts /out/dist /usr/share/gpulab/dist
# Every flag of `gpulab serve` has a GPULAB_* variable, so `docker run -e` changes any of
# them. Listening beyond loopback without a token, the server makes one and prints the URL
# with it (`docker logs`); `-e GPULAB_TOKEN_FILE=/run/secrets/…` sets your own.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=${REQUIRE_CUDA} \
    GPULAB_ADDR=0.0.0.0:8080 \
    GPULAB_DATA_DIR=/var/lib/gpulab \
    GPULAB_STATIC_DIR=/usr/share/gpulab/dist
USER gpulab
WORKDIR /var/lib/gpulab
VOLUME /var/lib/gpulab
EXPOSE 8080
# `gpulab health` asks /api/health on GPULAB_ADDR: no curl in the image.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["gpulab", "health"]
# The server stops on SIGTERM (`docker stop`): running jobs end `interrupted`.
STOPSIGNAL SIGTERM
CMD ["gpulab", "serve"]
