#!/usr/bin/env bash
# On the GPU machine: collect the pieces bench/gpu_wheels.py made (carried one per call into
# .gpu/), and once all N are there unpack them into /tmp/site (vLLM, bitsandbytes, the
# requirements the machine lacked, the default model's GGUF). Safe to run after every piece.
#
#   bash bench/gpu_stage.sh N && PYTHONPATH=/tmp/site:$PWD bench/gpu_check.sh
set -uo pipefail
PIECES=${1:?usage: gpu_stage.sh NUMBER_OF_PIECES}
mkdir -p /tmp/stage
for piece in .gpu/piece.*; do
  [ -f "$piece" ] && mv "$piece" /tmp/stage/
done
have=$(ls /tmp/stage | grep -c '^piece\.')
echo "gpu_stage: $have of $PIECES pieces"
if [ "$have" -lt "$PIECES" ] || [ -f /tmp/site/.complete ]; then
  [ -f /tmp/site/.complete ] && echo "gpu_stage: /tmp/site ready"
  [ "$have" -ge "$PIECES" ]  # exit status: ready or not
  exit
fi
rm -rf /tmp/site /tmp/site.partial && mkdir -p /tmp/site.partial
for i in $(seq 0 $((PIECES - 1))); do cat "/tmp/stage/piece.$i"; done \
  | python3 -c "import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.stdin.buffer), mode='r|').extractall('/tmp/site.partial', filter='fully_trusted')" \
  || { echo "gpu_stage: unpacking failed"; exit 3; }
mv /tmp/site.partial/site /tmp/site && touch /tmp/site/.complete && rm -rf /tmp/site.partial
echo "gpu_stage: /tmp/site ready ($(du -sh /tmp/site | cut -f1))"
