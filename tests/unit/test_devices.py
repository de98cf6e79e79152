"""--device and --dtype names: what they resolve to here, and one line for what this machine lacks."""

import pytest
import torch

from prefdiff.devices import process_state, resolve_device, resolve_dtype
from prefdiff.errors import ConfigError


def test_auto_is_the_gpu_when_there_is_one_and_cpu_is_always_there():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_an_absent_gpu_is_one_line_naming_the_flag(name):
    with pytest.raises(ConfigError, match=rf"--device {name}: no CUDA device is available.*use --device cpu or auto"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:"])
def test_unknown_devices_list_the_choices(name):
    with pytest.raises(ConfigError, match="expected auto"):
        resolve_device(name, flag="--device")


def test_precisions_and_fp16_on_a_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("bf16", cpu) is torch.bfloat16 and resolve_dtype("FP32", cpu) is torch.float32
    with pytest.raises(ConfigError, match="--dtype fp16 needs a GPU"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="expected one of fp32, fp16, bf16"):
        resolve_dtype("int8", cpu)
    assert resolve_dtype("fp16", torch.device("cuda")) is torch.float16  # named only; nothing is allocated


def test_one_process_has_no_process_state(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_state() is None
