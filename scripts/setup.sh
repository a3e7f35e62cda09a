#!/usr/bin/env bash
# Create .venv and install frankmerge with its test tools, from scratch, on a CPU machine.
# torch 2.14.1 + torchvision 0.29.1 are pinned together: several VLM processors (Qwen-VL,
# InternVL, OneVision, Mistral3) need torchvision, and an unpinned torch pulls a multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
