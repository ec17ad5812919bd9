"""Fixtures of the flow tests: the tiny DVC project and a temporary Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.dvc_project import make_dvc_project


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """A git + DVC project with three trivial stages and the real params.yaml."""
    return make_dvc_project(tmp_path)


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
