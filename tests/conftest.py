"""Shared fixtures: a small prepared demo dataset on disk and small model settings that train fast on a CPU."""

import pyro
import pytest

from data_tools.demo import make_demo_dataset

#: Networks small enough for a 2-core CI machine; the structure (five conv networks) is the product's.
SMALL_MODEL = {"a_dim": 8, "z_dim": 8, "channels": (8, 16, 32, 32, 32), "hidden": (32,)}


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="package")
def demo_dir(tmp_path_factory):
    """A 300-image, 28x28 demo dataset written in the prepared format."""
    out = tmp_path_factory.mktemp("data") / "demo28"
    make_demo_dataset(300, 28, seed=1).save(out)
    return out
