#!/usr/bin/env bash
# Build the authors' code as a same-run control for benchmarks/speed.py (nothing of it enters sccr).
#
# Usage: benchmarks/setup_authors.sh SCCR_GIT SCFP_GIT DEST
#   SCCR_GIT  a clone of https://github.com/daehoum1/scCR (a work tree or a bare repository)
#   SCFP_GIT  a clone of https://github.com/Junseok0207/scFP (scCR imports its misc/ package)
#   DEST      new folder: DEST/code (their files at HEAD) and DEST/venv (torch 2.13 CPU, scanpy,
#             scikit-learn, munkres: what their modules import)
# Then: python benchmarks/speed.py --authors DEST/code --authors-python DEST/venv/bin/python
# Where the package index serves CUDA builds of torch, set
#   PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
sccr_git=$1 scfp_git=$2 dest=$3
if [ -e "$dest" ]; then
    echo "setup_authors.sh: $dest exists; give a new folder" >&2
    exit 2
fi
mkdir -p "$dest/code"
git -C "$sccr_git" archive HEAD | tar -x -C "$dest/code"
git -C "$scfp_git" archive HEAD misc | tar -x -C "$dest/code"
python3 -m venv "$dest/venv"
# shellcheck disable=SC2086
"$dest/venv/bin/pip" install -q ${PIP_TORCH_ARGS:-} "torch==2.13.0"
"$dest/venv/bin/pip" install -q scanpy scikit-learn munkres
echo "python benchmarks/speed.py --authors $dest/code --authors-python $dest/venv/bin/python"
