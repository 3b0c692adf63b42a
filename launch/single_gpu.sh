#!/usr/bin/env bash
# One GPU, one process: install (requirements + jax[cuda12]) into a venv, then run stage 1 and stage 2.
#
# Usage (environment variables; defaults in brackets):
#   launch/single_gpu.sh                                   # the embedded demo (generated data, small models)
#   STAGE1_VARIANT=pubmedbert VARIANT=biomedclip WORKDIR=runs/paper \
#     STAGE1_ARGS="--config.text.hf_dir=/data/pubmedbert" \
#     STAGE2_ARGS="--config.init.checkpoint=/data/biomedclip --config.text.hf_dir=/data/pubmedbert --config.data.manifest=/data/train.jsonl" \
#     launch/single_gpu.sh
#
#   WORKDIR       output root; runs go to WORKDIR/stage1 and WORKDIR/stage2  [workdirs]
#   VARIANT       config variant for stage 2 ('' = demo, or biomedclip)      []
#   STAGE1_VARIANT config variant for stage 1 ('' = demo, or pubmedbert)    [pubmedbert when VARIANT=biomedclip]
#   STAGE1_ARGS / STAGE2_ARGS  extra main.py flags (--config.field=value)    []
#   VENV          virtualenv to create/use                                   [<repo>/.venv]
#   JAX_VERSION   jax[cuda12] version                                        [0.10.2]
#   SKIP_INSTALL=1 to use the venv as it is.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR="${WORKDIR:-workdirs}"
VARIANT="${VARIANT:-}"
STAGE1_VARIANT="${STAGE1_VARIANT:-}"
if [[ "${VARIANT}" == biomedclip && -z "${STAGE1_VARIANT}" ]]; then
  STAGE1_VARIANT=pubmedbert  # the teacher is a BERT of the student's family (PubMedBERT), as in the paper
fi
STAGE1_ARGS="${STAGE1_ARGS:-}"
STAGE2_ARGS="${STAGE2_ARGS:-}"
VENV="${VENV:-${REPO_ROOT}/.venv}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"

cd "${REPO_ROOT}"
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  python3 -m venv "${VENV}"
  # shellcheck source=/dev/null
  . "${VENV}/bin/activate"
  pip install -q --upgrade pip
  pip install -q -r requirements.txt
  pip install -q --no-deps -r requirements-nodeps.txt
  # Adds the CUDA 12 plugin and NVIDIA wheels for the pinned jax.
  pip install -q "jax[cuda12]==${JAX_VERSION}"
else
  # shellcheck source=/dev/null
  . "${VENV}/bin/activate"
fi
python -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'

with_variant() {
  # configs/<stage>.py, with ':variant' appended when one is given.
  if [[ -n "$2" ]]; then echo "configs/$1.py:$2"; else echo "configs/$1.py"; fi
}

read -r -a stage1_extra <<< "${STAGE1_ARGS}"
read -r -a stage2_extra <<< "${STAGE2_ARGS}"
python -m phenolip_jax.main --config="$(with_variant stage1 "${STAGE1_VARIANT}")" \
  --workdir="${WORKDIR}/stage1" "${stage1_extra[@]}"
# Stage 2 distils from the frozen stage-1 encoder just trained.
python -m phenolip_jax.main --config="$(with_variant stage2 "${VARIANT}")" --workdir="${WORKDIR}/stage2" \
  --config.teacher.workdir="${WORKDIR}/stage1" --config.model.dtype=bfloat16 "${stage2_extra[@]}"
