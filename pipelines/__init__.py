"""Input pipelines: safe ingest of folders, zip archives, TFDS and arrays, and the tf.data input path.

```python
from pipelines import ingest, make_datasets
manifest = ingest("data/flowers.zip", workdir="runs/r1")   # checks every file once; DataError when unusable
ds = make_datasets(manifest, image_size=224, batch_size=32, augment="light")
```

TensorFlow is imported only when a dataset is built (`make_datasets`, `make_dataset`, `augmentation`), so
`import pipelines` and `ingest` stay light.
"""

from pipelines.archives import ZipLimits
from pipelines.errors import DataError
from pipelines.ingest import IngestConfig, ingest
from pipelines.manifest import SPLITS, Manifest, Record
from pipelines.sample import sample_dataset_path

__all__ = [
    "AUGMENT_PRESETS",
    "SPLITS",
    "DataError",
    "DatasetConfig",
    "Datasets",
    "IngestConfig",
    "Manifest",
    "Record",
    "ZipLimits",
    "ingest",
    "make_dataset",
    "make_datasets",
    "sample_dataset_path",
]

_LAZY = {
    "make_datasets": "pipelines.dataset",
    "make_dataset": "pipelines.dataset",
    "Datasets": "pipelines.dataset",
    "DatasetConfig": "pipelines.dataset",
    "AUGMENT_PRESETS": "pipelines.augment",
}


def __getattr__(name: str):
    # The tf.data half imports TensorFlow; load it on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
