# pfednas app image: Flower 1.41's SuperExec image with pfednas and its dependencies.
#
# The SuperLink and the SuperNodes run Flower's own images (flwr/superlink,
# flwr/supernode); this image is the *executor* beside them: it runs the
# ServerApp next to the SuperLink and the ClientApps next to each SuperNode
# (`flower-superexec --runtime-api-address HOST:PORT`, see docker-compose.yml).
#
#   docker build -t pfednas:latest .
#
# CPU-only PyTorch by default (edge devices, CPU silos). For CUDA wheels:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t pfednas:cuda .
# An empty TORCH_INDEX_URL takes PyTorch from pip's configured index (PyPI's build, with its
# CUDA libraries): scripts/containers/build-images.sh does so where the CPU index is unreachable.
#
# arm64 (a Raspberry Pi 4/5, a Jetson's CPU, an arm64 server) from this same file: Flower's
# images are published for amd64 and arm64, so on the board `docker build` as above, or
# elsewhere `docker buildx build --platform linux/arm64 -t pfednas:latest-arm64 .`.
# scripts/containers/build-images.sh --platform linux/arm64 does it under QEMU with podman.
# pfednas needs Python 3.11 or 3.12: keep a py3.11 / py3.12 variant of the Flower image.
ARG FLWR_VERSION=1.41.0
ARG FLWR_IMAGE_VARIANT=py3.12-ubuntu24.04
FROM flwr/superexec:${FLWR_VERSION}-${FLWR_IMAGE_VARIANT}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /app

# PyTorch first, in a layer of its own: a change to the sources does not reinstall it.
RUN python -m pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch>=2.14,<2.15" "torchvision==0.29.*"

# Only what the package needs (docs, tests and outputs stay out of the image).
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app src ./src
COPY --chown=app:app strategies ./strategies
COPY --chown=app:app clients ./clients
COPY --chown=app:app conf ./conf

# flwr is already in the base image at the pinned version; the executor does not
# need Ray (simulation only), so `flwr[simulation]` becomes plain `flwr`.
RUN sed -i 's/"flwr\[simulation\]==/"flwr==/' pyproject.toml \
 && python -m pip install --no-cache-dir . \
 && python -c "import pfednas.app.server_app, pfednas.app.client_app"

# Where a silo's ClientApp keeps its personalized model (node config model-dir; a named
# volume in docker-compose.yml takes this folder's owner).
RUN mkdir -p /app/models

# Apps run from the installed package: no dependency installation at run time.
ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
ENTRYPOINT ["flower-superexec"]
