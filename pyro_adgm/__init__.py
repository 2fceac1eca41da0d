"""pyro-adgm: semi-supervised chest X-ray classification with the Auxiliary Deep Generative Model, in Pyro.

The model (:class:`ADGM`), its swappable networks, the trainer and the whole-job functions the CLI uses.
"""

from pyro_adgm.augment import AugmentSettings, DeviceAugment, make_augment
from pyro_adgm.layers import ConvTrunk
from pyro_adgm.likelihoods import BernoulliLikelihood, GaussianLikelihood
from pyro_adgm.model import ADGM, SharedNoiseNormal
from pyro_adgm.networks import (
    CategoricalNet,
    ConvImageDecoder,
    GaussianHead,
    GaussianNet,
    MLPImageDecoder,
    MLPTrunk,
    conv_networks,
    mlp_networks,
)
from pyro_adgm.objectives import Objective, register_objective
from pyro_adgm.runs import evaluate, load_model, predict, prepare_trainer, resume, sample, train
from pyro_adgm.training import TrainConfig, Trainer, TrainingData, TrainingDiverged

__all__ = [
    "ADGM", "AugmentSettings", "BernoulliLikelihood", "CategoricalNet", "ConvImageDecoder", "ConvTrunk",
    "DeviceAugment", "GaussianHead", "GaussianLikelihood", "GaussianNet", "MLPImageDecoder", "MLPTrunk", "Objective",
    "SharedNoiseNormal", "Trainer", "TrainConfig", "TrainingData", "TrainingDiverged", "conv_networks", "evaluate",
    "load_model", "make_augment", "mlp_networks", "predict", "prepare_trainer", "register_objective", "resume", "sample",
    "train",
]  # fmt: skip
