"""Multi-worker Trainer: trains in N worker processes under MultiWorkerMirroredStrategy (one worker: TF's
default strategy, see ``training.make_strategy``).

Modules: ``config`` (TrainingConfig, TrainingJob), ``launcher`` (Launcher interface, LocalProcessLauncher,
registry), ``cluster`` (TF_CONFIG), ``worker`` (the worker process entry), ``training`` (strategy,
datasets, model, fit), ``export`` (serving signatures), ``history`` (progress records and the merged
training history), ``component`` (the TFX component and executor).
"""
from components.trainer.config import TrainingConfig, TrainingJob

__all__ = ["TrainingConfig", "TrainingJob"]
