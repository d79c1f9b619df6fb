"""Shared test set-up: quiet TensorFlow, the TensorFlow backend, and the float32 policy after each test."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest


@pytest.fixture(autouse=True)
def _restore_precision_policy():
    """A test that changes the global mixed-precision policy never leaks it into the next one."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None and keras.mixed_precision.global_policy().name != "float32":
        keras.mixed_precision.set_global_policy("float32")
