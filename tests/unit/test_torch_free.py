"""The modules shared by the label app and the torch side import neither torch, transformers nor
diffusers, so the label app (which never imports torch) can use them."""

from __future__ import annotations

import subprocess
import sys

import pytest

SHARED = ["prefdiff.stats", "prefdiff.manifests", "prefdiff.pickapic_parquet", "prefdiff.runlog", "prefdiff.digest"]


@pytest.mark.parametrize("module", SHARED)
def test_a_shared_module_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted({{'torch', 'transformers', 'diffusers'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
