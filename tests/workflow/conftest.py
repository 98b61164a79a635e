"""The workflow tests' shared run: `.test/config/config.yaml` run by `snakemake` to its report, once per
session. Tests that only read outputs read it; tests that dry-run a changed config do so in its folder
(a dry run writes nothing); tests that rerun something copy it first (workflow_utils.copy_run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workflow_utils import SHARED_CONFIG, once_per_session, snakemake, write_shared_config


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, config): the finished run of the shared config, with report.html. NEUROSPEC_SHARED_RUN=DIR
    reuses DIR instead (a finished run of the current .test config, e.g. a previous session's, when
    iterating on one test; its config.yaml is rewritten, so a changed .test config reruns there).
    Under pytest-xdist the session's workers share one run (workflow_utils.once_per_session)."""
    reuse = os.environ.get("NEUROSPEC_SHARED_RUN")
    workdir = _make(Path(reuse)) if reuse else once_per_session(tmp_path_factory, "shared-run", _make)
    return workdir, workdir / "config.yaml"


def _make(workdir: Path) -> Path:
    cfg = write_shared_config(workdir)
    assert cfg.read_text() and SHARED_CONFIG.is_file()
    snakemake(workdir, configfile=cfg)
    snakemake(workdir, "--report", "report.html", configfile=cfg)
    return workdir
