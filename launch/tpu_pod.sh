#!/usr/bin/env bash
# Train PhenoLIP on a Cloud TPU VM slice: create (or reuse) the slice, copy the repo to every worker,
# install, then run stage 1 and stage 2 with `python -m phenolip_jax.main` on --worker=all.
#
# Every worker runs the same command; JAX finds its peers through the TPU metadata
# (PHENOLIP_DISTRIBUTED=1 makes main call jax.distributed.initialize()). WORKDIR must be a filesystem
# path every worker sees (a gcsfuse mount of a bucket, or Filestore NFS): orbax writes one checkpoint
# collectively, process 0 writes metrics.jsonl / JSON files with plain open(). Data (manifest, images,
# PubMedBERT dir) must sit at the same path on every worker too.
#
# Usage (all parameters are environment variables; defaults in brackets):
#   TPU_NAME=phenolip-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#   WORKDIR=/mnt/gcs/phenolip STAGES="stage1 stage2" launch/tpu_pod.sh
#
#   PROJECT            gcloud project                        [gcloud's configured project]
#   TPU_NAME           TPU VM name                           [phenolip-tpu]
#   ZONE               zone                                  [us-central2-b]
#   ACCELERATOR_TYPE   slice type (v4-32, v5litepod-16, ...) [v4-32]
#   RUNTIME_VERSION    TPU VM image                          [tpu-ubuntu2204-base]
#   SPOT               1 = create a spot slice               [0]
#   WORKDIR            shared output root (mounted path)     [required]
#   STAGES             which stages, in order                [stage1 stage2]
#   STAGE1_CONFIG      config for stage 1 (the teacher: a BERT of the student's family) [configs/stage1.py:pubmedbert]
#   STAGE2_CONFIG      config for stage 2                    [configs/stage2.py:biomedclip]
#   STAGE1_ARGS        extra flags for stage 1, e.g. "--config.text.hf_dir=/data/pubmedbert"   []
#   STAGE2_ARGS        extra flags for stage 2, e.g. "--config.init.checkpoint=/data/biomedclip
#                      --config.text.hf_dir=/data/pubmedbert --config.data.manifest=/data/train.jsonl" []
#                      (stage2.py:biomedclip refuses to start without init.checkpoint: a local BiomedCLIP dir)
#   REMOTE_DIR         repo location on the workers          [~/phenolip_jax]
#   JAX_VERSION        jax[tpu] version                      [0.10.2]
#   SKIP_CREATE=1 / SKIP_INSTALL=1 to reuse a prepared slice; DELETE_AFTER=1 to delete it when done.
set -euo pipefail

PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
TPU_NAME="${TPU_NAME:-phenolip-tpu}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
SPOT="${SPOT:-0}"
WORKDIR="${WORKDIR:?set WORKDIR to a path every worker shares (a gcsfuse or NFS mount)}"
if [[ "${WORKDIR}" == gs://* ]]; then
  echo "WORKDIR=${WORKDIR}: mount the bucket (gcsfuse) and pass the mount path; metrics are written with open()" >&2
  exit 2
fi
STAGES="${STAGES:-stage1 stage2}"
STAGE1_CONFIG="${STAGE1_CONFIG:-configs/stage1.py:pubmedbert}"
STAGE2_CONFIG="${STAGE2_CONFIG:-configs/stage2.py:biomedclip}"
STAGE1_ARGS="${STAGE1_ARGS:-}"
STAGE2_ARGS="${STAGE2_ARGS:-}"
REMOTE_DIR="${REMOTE_DIR:-~/phenolip_jax}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

tpu() {
  # gcloud compute tpus tpu-vm <args> with the project and zone filled in.
  gcloud compute tpus tpu-vm "$@" --project="${PROJECT}" --zone="${ZONE}"
}

on_all_workers() {
  # Runs one shell command on every worker of the slice, at the same time.
  tpu ssh "${TPU_NAME}" --worker=all --command="$1"
}

if [[ "${SKIP_CREATE:-0}" != 1 ]]; then
  if tpu describe "${TPU_NAME}" >/dev/null 2>&1; then
    echo "reusing TPU VM ${TPU_NAME}"
  else
    spot_flag=()
    if [[ "${SPOT}" == 1 ]]; then
      spot_flag=(--spot)
    fi
    tpu create "${TPU_NAME}" --accelerator-type="${ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION}" \
      "${spot_flag[@]}"
  fi
fi

# Ship the working tree (without workdirs, caches or a local venv) to every worker.
archive="$(mktemp /tmp/phenolip_jax.XXXXXX.tar.gz)"
trap 'rm -f "${archive}"' EXIT
tar -C "${REPO_ROOT}" --exclude=.git --exclude=.venv --exclude=workdirs --exclude='__pycache__' \
  -czf "${archive}" .
tpu scp "${archive}" "${TPU_NAME}:/tmp/phenolip_jax.tar.gz" --worker=all
on_all_workers "mkdir -p ${REMOTE_DIR} && tar -C ${REMOTE_DIR} -xzf /tmp/phenolip_jax.tar.gz"

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  # requirements.txt pins the CPU jax; jax[tpu] then adds libtpu for the same version.
  on_all_workers "cd ${REMOTE_DIR} && python3 -m venv .venv && . .venv/bin/activate && \
    pip install -q --upgrade pip && pip install -q -r requirements.txt && \
    pip install -q --no-deps -r requirements-nodeps.txt && pip install -q 'jax[tpu]==${JAX_VERSION}'"
fi

for stage in ${STAGES}; do
  case "${stage}" in
    stage1) config="${STAGE1_CONFIG}"; extra="${STAGE1_ARGS}" ;;
    stage2) config="${STAGE2_CONFIG}"; extra="${STAGE2_ARGS}" ;;
    *) echo "unknown stage ${stage}: use stage1 and/or stage2" >&2; exit 2 ;;
  esac
  if [[ "${stage}" == stage2 && "${STAGES}" == *stage1* && "${STAGE2_ARGS}" != *teacher.workdir* ]]; then
    # Stage 2 distils from the stage-1 run of this launch.
    extra="${extra} --config.teacher.workdir=${WORKDIR}/stage1"
  fi
  echo "=== ${stage}: ${config} -> ${WORKDIR}/${stage}"
  on_all_workers "cd ${REMOTE_DIR} && . .venv/bin/activate && PHENOLIP_DISTRIBUTED=1 \
    python -m phenolip_jax.main --config=${config} --workdir=${WORKDIR}/${stage} ${extra}"
done

if [[ "${DELETE_AFTER:-0}" == 1 ]]; then
  tpu delete "${TPU_NAME}" --quiet
fi
