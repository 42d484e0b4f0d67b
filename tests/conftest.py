import numpy as np
import pytest

from evtdsl import dtypes as dt


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAS_GPU = _has_gpu()


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name so failures reproduce."""
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


def rand(rng, shape, dtype=dt.f32, scale=1.0):
    """Random normal values (never zeros) in the given evtdsl dtype."""
    return (rng.standard_normal(shape) * scale).astype(dtype.np_dtype)


def rel_err(got, ref) -> float:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert not np.isnan(got).any(), "output has NaN (unwritten or poisoned elements)"
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
