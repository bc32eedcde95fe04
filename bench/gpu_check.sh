#!/usr/bin/env bash
# GPU check (issue 5): real vLLM on an NVIDIA GPU with runtime LoRA. One run, under 8 minutes.
#
#   MODEL=/models/Qwen2.5-Coder-1.5B bench/gpu_check.sh
#
# MODEL: a Hugging Face model folder; a code model with FIM tokens if the machine has one
# (default: the converted SmolLM2 under .codeloop-test/models). PYTHON: an interpreter with
# vLLM installed (default python3). Prints time to first token and tokens/s for the base model
# and two adapters (random, seeded LoRAs, r=16 on q/k/v/o), and each adapter's load time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-.codeloop-test/models/SmolLM2-135M-Instruct}
PORT=${PORT:-8300}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$PYTHON" - <<'PY' || { echo "gpu_check: needs vLLM and a CUDA GPU in $PYTHON"; exit 2; }
import torch, vllm
assert torch.cuda.is_available(), "no CUDA device"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PY
[ -f "$MODEL/config.json" ] || { echo "gpu_check: no model folder at MODEL=$MODEL"; exit 2; }

echo "making two adapters for $MODEL"
"$PYTHON" - "$MODEL" "$WORK" <<'PY'
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
model_dir, work = sys.argv[1], sys.argv[2]
for seed in (1, 2):
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16)
    lora = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, w in lora.named_parameters():
            if "lora_B" in name:
                w.mul_(0.05)
    lora.save_pretrained(f"{work}/a{seed}")
PY

echo "starting vllm serve"
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
  "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name base \
  --enable-lora --max-loras 4 --max-lora-rank 16 --host 127.0.0.1 --port "$PORT" \
  --max-model-len 4096 --gpu-memory-utilization 0.5 >"$WORK/vllm.log" 2>&1 &
echo $! >"$WORK/pid"
START=$(date +%s)
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  sleep 2
  if ! kill -0 "$(cat "$WORK/pid")" 2>/dev/null || [ $(( $(date +%s) - START )) -gt 300 ]; then
    tail -40 "$WORK/vllm.log"; echo "gpu_check: vLLM did not come up"; exit 1
  fi
done
echo "vLLM healthy after $(( $(date +%s) - START )) s"

timeout 300 "$PYTHON" - "http://127.0.0.1:$PORT" "$WORK" "$MODEL" <<'PY'
import json, statistics, sys, time, urllib.request
url, work, model = sys.argv[1:4]

def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=120)

def stream(name, prompt, max_tokens=64):
    t0, first, chunks, usage = time.perf_counter(), None, 0, {}
    body = {"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    with post("/v1/completions", body) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            data = json.loads(line[5:])
            usage = data.get("usage") or usage
            if any(c.get("text") for c in data.get("choices", [])):
                first = first or time.perf_counter()
    done = time.perf_counter()
    tokens = usage.get("completion_tokens", 0)
    return (first - t0) * 1000, tokens / (done - first) if done > first else float("nan")

vocab = open(f"{model}/tokenizer.json").read()
fim = "<fim_prefix>" in vocab or "<|fim_prefix|>" in vocab
prompt = ("def scale(values, factor):\n    return [v * factor for v in values]\n\n" * 40) + "def fibonacci(n):\n"
print(f"model {model}; FIM tokens: {'yes' if fim else 'no'}; prompt ~{len(prompt) // 4} tokens; 64 new tokens")
loads = {}
for name in ("a1", "a2"):
    t0 = time.perf_counter()
    post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": f"{work}/{name}"}).read()
    loads[name] = time.perf_counter() - t0
print(f"{'case':10} {'load (s)':>9} {'first use TTFT (ms)':>20} {'TTFT p50 (ms)':>14} {'tokens/s p50':>13}")
for name in ("base", "a1", "a2"):
    first_ttft, _ = stream(name, prompt)
    runs = [stream(name, prompt) for _ in range(5)]
    load = f"{loads[name]:9.3f}" if name in loads else f"{'-':>9}"
    print(f"{name:10} {load} {first_ttft:20.1f} {statistics.median(r[0] for r in runs):14.1f} {statistics.median(r[1] for r in runs):13.1f}")
PY
