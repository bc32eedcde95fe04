"""Adapter folder checks that run before any engine sees the files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.adapters import AdapterError, hash_folder, validate_adapter
from server.engines import LoraLimits

MODEL_DIR = Path("/models/SmolLM2-135M-Instruct")


def make_folder(root: Path, name: str = "a", **config) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    cfg = {"peft_type": "LORA", "base_model_name_or_path": str(MODEL_DIR), "r": 8, "target_modules": ["q_proj", "v_proj"]}
    cfg.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return folder


def check(root: Path, path, name="team-py@1", max_bytes=10_000):
    return validate_adapter(name, path, adapters_dir=root, model_name=MODEL_DIR.name, model_dir=MODEL_DIR, max_bytes=max_bytes)


def test_valid_folder_is_hashed(tmp_path):
    folder = make_folder(tmp_path)
    record = check(tmp_path, folder)
    assert record.sha256 == hash_folder(folder) and len(record.sha256) == 64
    assert (record.rank, record.target_modules) == (8, ["q_proj", "v_proj"])
    (folder / "adapter_model.safetensors").write_bytes(b"\1" * 64)
    assert hash_folder(folder) != record.sha256


def test_relative_path_is_inside_the_adapter_dir(tmp_path):
    make_folder(tmp_path, "rel")
    assert check(tmp_path, "rel").path == str((tmp_path / "rel").resolve())


@pytest.mark.parametrize(
    "name", ["", "has space", "../etc", "a/b", "x@", "x@y", "-leading", "a" * 80]
)
def test_bad_names(tmp_path, name):
    folder = make_folder(tmp_path)
    with pytest.raises(AdapterError) as err:
        check(tmp_path, folder, name=name)
    assert err.value.status == 422 and "name" in str(err.value)


def test_outside_the_adapter_dir_even_through_a_link(tmp_path):
    outside = make_folder(tmp_path / "elsewhere")
    inside = tmp_path / "adapters"
    inside.mkdir()
    (inside / "link").symlink_to(outside)
    for path in (outside, inside / "link", inside / ".." / "elsewhere" / "a"):
        with pytest.raises(AdapterError) as err:
            check(inside, path)
        assert err.value.status == 403


def test_a_link_inside_the_folder_is_refused(tmp_path):
    """The weights file may not be a link out of adapter_dir (it could change after hashing)."""
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes(b"\0" * 64)
    folder = make_folder(tmp_path / "adapters")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to(elsewhere)
    with pytest.raises(AdapterError, match="holds links .adapter_model.safetensors.") as err:
        check(tmp_path / "adapters", folder)
    assert err.value.status == 422


def test_empty_values_of_other_keys_pass_as_peft_writes_them(tmp_path):
    record = check(tmp_path, make_folder(tmp_path, layer_replication=None, use_dora=False, eva_config=None,
                                         loftq_config={}, peft_version="0.21.2", bias="none"))
    assert record.rank == 8


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"fim_template": 7}'])
def test_a_malformed_codeloop_json_is_a_422(tmp_path, content):
    folder = make_folder(tmp_path)
    (folder / "codeloop.json").write_text(content)
    with pytest.raises(AdapterError, match="codeloop.json") as err:
        check(tmp_path, folder)
    assert err.value.status == 422


def test_pickled_weights_are_refused(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="pickled weights are refused"):
        check(tmp_path, folder)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"peft_type": "IA3"}, "only LoRA"),
        ({"base_model_name_or_path": "Qwen/Qwen2.5-Coder-1.5B"}, "trained on"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"layer_replication": [[0, 4], [2, 6]]}, "sets layer_replication: refused"),
        ({"trainable_token_indices": [1, 2]}, "sets trainable_token_indices: refused"),
        ({"use_dora": True}, "sets use_dora: refused"),
        ({"bias": "all"}, "bias must be 'none'"),
    ],
)
def test_config_problems(tmp_path, config, message):
    with pytest.raises(AdapterError, match=message) as err:
        check(tmp_path, make_folder(tmp_path, **config))
    assert err.value.status == 422


def test_missing_pieces(tmp_path):
    with pytest.raises(AdapterError) as err:
        check(tmp_path, tmp_path / "nothing")
    assert err.value.status == 404
    folder = make_folder(tmp_path)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        check(tmp_path, folder)


def test_size_limit(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 20_000)
    with pytest.raises(AdapterError) as err:
        check(tmp_path, folder)
    assert err.value.status == 413 and "adapter_max_mb" in str(err.value)


VLLM_LIKE = LoraLimits(max_rank=16, target_modules=frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}))


def check_limits(root: Path, limits: LoraLimits = VLLM_LIKE, **config):
    folder = make_folder(root, **config)
    return validate_adapter("team-py@1", folder, adapters_dir=root, model_name=MODEL_DIR.name, model_dir=MODEL_DIR,
                            max_bytes=10_000, limits=limits)


@pytest.mark.parametrize("config,message", [
    ({"r": 32}, "rank 32 is over this engine's limit of 16"),
    ({"r": 8, "rank_pattern": {"q_proj": 64}}, "rank 64 is over"),
    ({"r": 0}, "no LoRA rank"),
    ({"r": "big"}, "must be integers"),
    ({"target_modules": ["q_proj", "lm_head"]}, "cannot apply LoRA to ['lm_head']"),
    ({"target_modules": ["model.layers.0.self_attn.q_proj", "embed_tokens"]}, "cannot apply LoRA to ['embed_tokens']"),
    ({"target_modules": ".*proj"}, "list the module names"),
    ({"target_modules": []}, "non-empty list"),
    ({"target_modules": [1, 2]}, "non-empty list"),
])
def test_rank_and_target_modules_are_checked_against_the_engine(tmp_path, config, message):
    with pytest.raises(AdapterError) as err:
        check_limits(tmp_path, **config)
    assert err.value.status == 422 and message in str(err.value)


def test_limits_that_hold(tmp_path):
    record = check_limits(tmp_path, r=16, target_modules=["v_proj", "model.layers.0.mlp.down_proj"])
    assert (record.rank, record.target_modules) == (16, ["model.layers.0.mlp.down_proj", "v_proj"])
    assert check_limits(tmp_path / "b", target_modules="all-linear").target_modules == ["all-linear"]
    # No limits known (e.g. a test engine): only the shape of the config is checked.
    assert check_limits(tmp_path / "c", LoraLimits(), r=512, target_modules=["lm_head"]).rank == 512
