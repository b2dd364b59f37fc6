"""Every usage error that needs no model is raised before torch or transformers is imported.

Each case of benchmarks/bench_errors.py runs ``python -m lmctl ...`` in a fresh process whose
exit hook reports which of torch/transformers/accelerate were in ``sys.modules`` (see PROBE there).
"""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_errors  # noqa: E402


def case_names() -> list[str]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return [case["name"] for case in bench_errors.make_cases(Path(tmp))]


@pytest.mark.parametrize("name", case_names())
def test_usage_error_comes_before_heavy_imports(name, tmp_path):
    case = next(c for c in bench_errors.make_cases(tmp_path) if c["name"] == name)
    outcome = bench_errors.run_case(case, tmp_path)
    stderr = outcome["stderr"]
    if case.get("reference"):
        assert outcome["code"] == 0 and outcome["heavy"] == "", stderr
        return
    assert outcome["code"] == case["code"], stderr
    assert case["message"] in stderr, stderr
    assert "Traceback" not in stderr
    assert outcome["heavy"] == "", f"imported {outcome['heavy']} before the error: {stderr}"
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, stderr
