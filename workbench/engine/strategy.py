"""Distribution strategies: which devices train, who writes the run, how datasets are split.

* `default`: one device (the first GPU, else the CPU).
* `mirrored`: every GPU of this machine (or, without GPUs, every logical CPU device when more
  than one is configured), gradients all-reduced each step.
* `multiworker`: the same across machines; each process reads its role from `TF_CONFIG`.
* `tpu`: a TPU found by `TPUClusterResolver` (`TPU_NAME`, or the local one).
* `auto`: `mirrored` when more than one GPU is visible, else `default`.

Batches are global: per-replica batch x `num_replicas_in_sync` (`Batching` holds that arithmetic:
steps per epoch, batches every replica can share, images left out). Datasets get an explicit
auto-shard policy so tf.data never guesses (and never warns): `DATA` across workers (every
worker reads the same files and keeps its share of the batches), `OFF` within one machine
(MirroredStrategy splits each global batch between local replicas itself).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from workbench.engine.config import STRATEGIES


@dataclasses.dataclass(frozen=True)
class Batching:
    """How a split is batched under a strategy: `per_replica` images per replica and step, `replicas`
    replicas in sync, so one step consumes a global batch of `per_replica x replicas` images.

    With more than one replica, a last global batch smaller than the replica count would leave a
    replica an empty batch, which TensorFlow's CPU convolutions reject: `even_batches` skips it
    (those images are counted by `skipped`, and the phase events report them as `skipped_images`).
    """

    per_replica: int
    replicas: int = 1

    @classmethod
    def of(cls, strategy, per_replica: int) -> Batching:
        return cls(per_replica=per_replica, replicas=int(strategy.num_replicas_in_sync))

    @property
    def global_batch(self) -> int:
        return self.per_replica * self.replicas

    def batches(self, num_images: int) -> int:
        """Batches per epoch of a split of `num_images` after `even_batches`."""
        if num_images < self.global_batch:
            return 1 if num_images >= self.replicas else 0
        last = num_images % self.global_batch
        return num_images // self.global_batch + (1 if last >= self.replicas else 0)

    def steps(self, num_images: int) -> int:
        """Optimizer steps per epoch (at least 1: the learning-rate schedule divides by it)."""
        return max(1, self.batches(num_images))

    def skipped(self, num_images: int) -> int:
        """Images of a split that `even_batches` leaves out of every epoch (0 on one replica)."""
        if self.replicas == 1:
            return 0
        if num_images < self.global_batch:
            return num_images % self.replicas
        last = num_images % self.global_batch
        return last if 0 < last < self.replicas else 0

    def even_batches(self, dataset, num_images: int):
        """Batches every replica can share: drop a last batch smaller than the replica count, and
        when the whole split is smaller than one global batch, batch it at a multiple of the replica
        count (Keras reduces the first batch across replicas and fails on uneven shares).
        `dataset` yields global batches of a split of `num_images`; one replica keeps it as it is."""
        if self.replicas == 1:
            return dataset
        if num_images < self.global_batch:
            usable = num_images - num_images % self.replicas
            # drop_remainder: the images past `usable` would form a batch smaller than the replica count.
            return dataset.unbatch().batch(usable, drop_remainder=True) if usable else dataset.take(0)
        last = num_images % self.global_batch
        if 0 < last < self.replicas:
            return dataset.take(num_images // self.global_batch)
        return dataset


def known_cardinality(dataset, batches: int):
    """Tell tf.data how many batches a split has when it cannot tell itself (Keras otherwise warns
    that the input "ran out of data" at the end of every first epoch)."""
    import tensorflow as tf

    if int(dataset.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def resolve_strategy(name: str):
    """Build the `tf.distribute.Strategy` for `name`; a clear `ValueError` when it cannot run here."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    # Physical devices: listing logical ones would initialise the runtime, after which
    # MultiWorkerMirroredStrategy can no longer configure its collective ops.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy=multiworker needs TF_CONFIG in the environment of every worker, e.g. "
                'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\' (see README, "Training on several machines")'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as exc:
            raise ValueError(f"TF_CONFIG is not valid JSON ({exc}); fix the environment variable") from exc
        return tf.distribute.MultiWorkerMirroredStrategy()
    # tpu
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as exc:
        raise ValueError(
            f"strategy=tpu found no TPU ({exc}); run on a TPU VM or set TPU_NAME, or use --strategy auto"
        ) from exc
    return tf.distribute.TPUStrategy(resolver)


def strategy_label(strategy) -> str:
    """`default`, `MirroredStrategy`, ...: the class name, without the private default's."""
    name = type(strategy).__name__
    return "default" if name.startswith("_Default") else name


def num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not hasattr(strategy.extended, "_num_workers"):
        return 1
    return int(strategy.extended._num_workers)


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and num_workers(strategy) > 1


def is_chief(strategy) -> bool:
    """Whether this process writes the run's artifacts. Single-process strategies: always.
    Multi-worker: the `chief` task, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def shard_policy_name(strategy) -> str:
    """The auto-shard policy for `strategy`, as `pipelines.make_datasets(shard_policy=...)` takes it."""
    return "data" if is_multi_worker(strategy) else "off"


def with_sharding_policy(dataset, strategy):
    """Attach the explicit auto-shard policy (see module docstring) to a tf.data dataset."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
        if shard_policy_name(strategy) == "data"
        else tf.data.experimental.AutoShardPolicy.OFF
    )
    return dataset.with_options(options)


@contextmanager
def keras_fit_fixes(model, strategy) -> Iterator[None]:
    """Work around two Keras 3 bugs that break `fit` under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, open): before the first step Keras reduces a sample batch across
    workers and fails on it, and it reduces scalar metrics "along axis 0", which rank-0 values
    lack. Inside this block the model forgets its recorded strategy (so `fit` takes the one of
    the scope and skips the sample-batch reduction) and per-replica metrics are averaged across
    all workers with `axis=None`. Everything is restored on exit; other strategies are untouched.
    """
    if not is_multi_worker(strategy):
        yield
        return
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy_):
            return tree.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy_, reduction)

    recorded = model._distribute_strategy
    model._distribute_strategy = None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        with strategy.scope():
            yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        model._distribute_strategy = recorded
