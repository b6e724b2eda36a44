"""Shared fixtures.

Real data is found through ``$HDRLAB_DATA`` (default: ``../shared/data`` next to the
repository). When ``CI=true`` or ``HDRLAB_DATA`` is set and the folder is missing, the
real-data tests fail instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("HDRLAB_DATA", REPO.parent / "shared" / "data")).resolve()


def _require(path: Path) -> Path:
    if path.exists():
        return path
    strict = os.environ.get("CI", "").lower() == "true" or "HDRLAB_DATA" in os.environ
    msg = f"real data folder {path} is missing (set HDRLAB_DATA to the data folder)"
    if strict:
        pytest.fail(msg)
    pytest.skip(msg)


NETGUARD = REPO / "tests" / "support" / "netguard"


def pytest_configure(config: pytest.Config) -> None:
    """No network at run time: install the connection guard (``tests/support/netguard``) in this
    process and, through ``PYTHONPATH``, in every Python subprocess; attempts are logged to a file
    that :func:`pytest_sessionfinish` checks."""
    import sys
    import tempfile

    # bugs keep their traceback in tests that call hdrlab.cli.main in-process (hdrlab --debug)
    os.environ["HDRLAB_DEBUG"] = "1"
    log = Path(tempfile.mkdtemp(prefix="hdrlab-netguard-")) / "attempts.log"
    log.touch()
    os.environ["HDRLAB_NETGUARD_LOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(NETGUARD))
    import sitecustomize  # noqa: F401 - the guard installs itself on import


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log = Path(os.environ.get("HDRLAB_NETGUARD_LOG", ""))
    attempts = log.read_text().splitlines() if log.is_file() else []
    if attempts:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nnetwork access attempted during the tests ({len(attempts)}): " + "; ".join(attempts[:5]))


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _require(_data_root())


@pytest.fixture(scope="session")
def real_hdr_dir(data_root: Path) -> Path:
    return _require(data_root / "real_hdr")


@pytest.fixture(scope="session")
def crf_dir(data_root: Path) -> Path:
    return _require(data_root / "crf")


@pytest.fixture(scope="session")
def expandnet_weights(data_root: Path) -> Path:
    """The official ExpandNet state dict (``weights/expandnet/weights.pth``)."""
    return _require(data_root / "weights" / "expandnet" / "weights.pth")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op torch thread for a module (opt in with ``pytestmark``): small tensors gain
    nothing from threads on a 2-core machine, oversubscription made some files 5-8x slower, and a
    single thread keeps the overfit runs deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
