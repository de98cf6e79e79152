import pytest

from prefdiff.errors import ConfigError, ModelLoadError
from prefdiff.registry import Registry


def test_unknown_names_list_the_known_ones_never_fall_through():
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    registry.register("b")(2)
    assert registry.get("b") == 2 and registry.names() == ["a", "b"] and "a" in registry
    with pytest.raises(ConfigError, match=r"config key 'x.kind': unknown widget 'c' \(known: a, b\)"):
        registry.get("c", key="x.kind")


def test_a_name_registered_twice_is_refused():
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    registry.register("a")(1)  # the same entry again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(2)


def test_package_registries_discover_their_modules():
    """Each package registry finds the entries its modules register, without a list of them."""
    from prefdiff.models.base import BACKBONES

    assert {"sd", "sdxl"} <= set(BACKBONES.names())
    with pytest.raises(ModelLoadError, match=r"unknown model family 'pixart' \(known: "):
        BACKBONES.get("pixart")
