# GPU training image: `dsita run` takes /mnt (a bind mount) from sources/it.tar.gz to the release files.
#   docker build -t dsita .
#   docker run --rm --gpus all --shm-size=8g --mount type=bind,src=$HOME/data,dst=/mnt dsita
# The same file builds a CPU image from a plain Debian base (Python 3.11), with torch's CPU wheel put in
# docker/wheels/ (`make docker-test` does all this, with podman and buildah):
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim --build-arg TORCH=torch==2.13.0+cpu -t dsita:cpu .
#
# BASE_IMAGE: the official CUDA PyTorch runtime image, whose torch satisfies pyproject's pin (torch 2.13).
# torch 2.13.0 is built for CUDA 12.6, 12.9, 13.0 and 13.2 (there is no 12.8 build): 12.6 runs on drivers
# >= 525 and on V100 to H200; Blackwell GPUs need a CUDA 13 tag (drivers >= 580), e.g.
# --build-arg BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

# KenLM's lmplz, filter and build_binary, linked statically: the runtime stage needs no compiler or boost.
FROM ${BASE_IMAGE} AS kenlm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# build_kenlm.sh downloads KenLM's source with pip: a base without Python gets Debian's.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake zlib1g-dev libbz2-dev liblzma-dev \
       libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev \
    && if ! python3 -m pip --version > /dev/null 2>&1; then \
         apt-get install -y --no-install-recommends python3-pip ca-certificates; \
       fi \
    && rm -rf /var/lib/apt/lists/*
COPY tools/build_kenlm.sh /tmp/build_kenlm.sh
# Behind a TLS-inspecting proxy, pip gets the proxy's CA as a build secret (it stays out of the image):
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt ...
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && KENLM_STATIC=1 bash /tmp/build_kenlm.sh /opt/kenlm python3

# What runs: Python (the base image's, or Debian's python3 on a base without one) and fortunes-it, the
# default language model corpus.
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fortunes-it \
    && if ! command -v python3 > /dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
       fi \
    && rm -rf /var/lib/apt/lists/*

# dsita in /opt/venv, which sees the base image's packages (its CUDA torch). Every locked version goes in
# as a wheel: --only-binary makes a package without a wheel for this Python fail here, not at run time;
# docopt (num2words' dependency, pure Python) is the one published only as source. TORCH, when set, is a
# requirement installed from docker/wheels/ or PyPI (the CPU image: torch==2.13.0+cpu); empty keeps the
# base image's torch. dsita goes in last, without dependencies, so nothing unlocked comes in (and a change
# to the code does not reinstall the rest); the check fails the build if a pin is not installed or a
# dependency is missing from the lock.
FROM runtime AS venv
ARG TORCH=
WORKDIR /opt/dsita
COPY docker/wheels /tmp/wheels
COPY requirements.lock ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --no-binary=docopt --no-deps \
       --requirement requirements.lock \
    && if [ -n "$TORCH" ]; then \
         /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --no-deps --find-links /tmp/wheels "$TORCH"; \
       fi
COPY pyproject.toml README.md ./
COPY tools/lock_requirements.py ./tools/
COPY src ./src
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/venv/bin/python tools/lock_requirements.py --check requirements.lock \
    && /opt/venv/bin/python -c "import torch; print('torch', torch.__version__)"

FROM runtime
COPY --from=kenlm /opt/kenlm/bin /opt/kenlm/bin
COPY --from=venv /opt/venv /opt/venv
COPY samples/it-sample.tar.gz /opt/dsita/samples/
RUN groupadd --system --gid 999 trainer \
    && useradd --system --uid 999 --gid 999 --create-home --shell /bin/bash trainer

# `docker run --env-file` or `-e NAME=value` set the settings (`dsita config` explains each; ES_STOP is the
# alias of ES_EPOCHS).
# Only paths: every setting keeps dsita's default, which is the original image's (BATCH_SIZE=64 EPOCHS=30
# LEARNING_RATE=0.0001 N_HIDDEN=2048 DROPOUT=0.4 EARLY_STOP=1 ES_STOP=10 MAX_TO_KEEP=2 LM_ALPHA=0 LM_BETA=0
# LM_EVALUATE_RANGE= AMP=1 TRANSFER_LEARNING=0 DROP_SOURCE_LAYERS=1 FAST_TRAIN=0 ONLY_EXPORT=0
# ENGLISH_COMPATIBLE=0; `dsita config` lists them all). Declaring them here would hide them from the presets:
# FAST_TRAIN=1 and AUGMENT=1 fill in only the settings nothing sets.
ENV PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/mnt \
    TRANSFER_CHECKPOINT_DIR=/transfer-checkpoint \
    KENLM_BIN=/opt/kenlm/bin \
    SAMPLE_ARCHIVE=/opt/dsita/samples/it-sample.tar.gz \
    PYTHONUNBUFFERED=1

# trainer, by id, so that Kubernetes and friends can check it is not root
USER 999:999
WORKDIR /home/trainer
ENTRYPOINT ["dsita", "run"]
