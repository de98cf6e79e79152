"""Which accelerate distributed modes a run accepts (no DeepSpeed or GPU needed: the type is faked)."""

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from prefdiff.errors import ConfigError
from prefdiff.train.sharding import check_distributed


def _accelerator(kind: DistributedType, fsdp_version: int | None = None) -> SimpleNamespace:
    plugin = SimpleNamespace(fsdp_version=fsdp_version) if fsdp_version else None
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin))


@pytest.mark.parametrize("kind", [DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM])
def test_deepspeed_and_megatron_are_refused_with_what_is_supported(kind):
    with pytest.raises(ConfigError) as error:
        check_distributed(_accelerator(kind))
    message = str(error.value)
    assert kind.name in message and "--multi_gpu" in message and "--use_fsdp --fsdp_version 2" in message


def test_fsdp_version_1_is_refused_and_fsdp2_asked_for():
    with pytest.raises(ConfigError, match="FSDP2 is required: add `--fsdp_version 2`"):
        check_distributed(_accelerator(DistributedType.FSDP, fsdp_version=1))


@pytest.mark.parametrize(
    "accelerator",
    [
        _accelerator(DistributedType.NO),
        _accelerator(DistributedType.MULTI_CPU),
        _accelerator(DistributedType.MULTI_GPU),
        _accelerator(DistributedType.FSDP, fsdp_version=2),
    ],
    ids=["single", "ddp_cpu", "ddp_gpu", "fsdp2"],
)
def test_single_process_ddp_and_fsdp2_are_accepted(accelerator):
    check_distributed(accelerator)
