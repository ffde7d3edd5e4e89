#!/usr/bin/env bash
# Throw-away venvs holding the original clients, for the tests that prove dsita's DeepSpeech graph files
# load in them. Test tools only: nothing in dsita imports them. Idempotent: a venv whose marker records the
# same requirements is left alone.
#   usage: tools/setup_clients.sh DEST        (the Makefile passes .cache/clients)
set -euo pipefail

dest=${1:?usage: tools/setup_clients.sh DEST}
pyenv_root=${PYENV_ROOT:-/root/.pyenv}

# name | interpreter version | requirements. Both deepspeech packages provide the `deepspeech` module, so
# each gets its own venv. numpy<2: the 0.9.3 wheels were built against numpy 1's C API. The decoder packages
# (ds-ctcdecoder, coqui-stt-ctcdecoder) are the clients' own CTC decoders as Python modules; tflite-runtime
# runs a .tflite graph outside the clients, to read its per-frame probabilities.
clients=(
  "deepspeech-0.9.3|3.9.18|deepspeech==0.9.3 ds-ctcdecoder==0.9.3 numpy<2"
  "deepspeech-tflite-0.9.3|3.9.18|deepspeech-tflite==0.9.3 ds-ctcdecoder==0.9.3 numpy<2"
  "stt-1.4.0|3.10.13|stt==1.4.0 coqui-stt-ctcdecoder==1.4.0 tflite-runtime==2.14.0 numpy<2"
)

mkdir -p "$dest"
for entry in "${clients[@]}"; do
  IFS='|' read -r name version requirements <<<"$entry"
  python="$pyenv_root/versions/$version/bin/python"
  venv="$dest/$name"
  marker="$venv/.requirements"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$requirements" ] && [ -x "$venv/bin/python" ]; then
    continue
  fi
  if [ ! -x "$python" ]; then
    echo "setup_clients: Python $version not found at $python (needed for the $name client venv)" >&2
    exit 1
  fi
  echo "setup_clients: creating $venv ($requirements)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # shellcheck disable=SC2086  # the requirements are one word each
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$marker"
done
