"""Shared test set-up: quiet TensorFlow, the TensorFlow backend, and a clean Keras state per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _keras_clean_state():
    """Each test starts with a fresh Keras graph and the float32 policy, and leaves them so."""
    import keras

    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
