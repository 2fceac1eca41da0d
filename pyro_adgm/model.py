"""The Auxiliary Deep Generative Model (Maaløe et al. 2016) as a Pyro model and guide.

Generative model:  p(z) p(y) p(x|z,y) p(a|z,y,x), with p(z) = N(0, I), p(y) = Cat(pi), p(x|z,y) from a
likelihood (the paper's Gaussian by default, or a discretised logistic over the 256 grey levels) and p(a|z,y,x) Gaussian.
Inference model:   q(a|x) q(y|a,x) q(z|a,y,x), all Gaussian but q(y|a,x), which is categorical and is summed
out exactly (parallel enumeration under ``TraceEnum_ELBO``) when y is not observed.

For a labelled batch the program adds ``alpha * log q(y|a,x)`` (the auxiliary classification term of
Kingma et al. 2014 / Maaløe et al. 2016) as a factor, with a drawn from q(a|x), so that its loss is
L(x, y) + alpha * (-log q(y|a,x)). Sizing the plate with ``data_size`` scales a batch to the whole data set, so
that one step's loss is an unbiased estimate of J^alpha = sum_l [L + alpha CE] + sum_u U (no averaging).
The KL terms (the a and z sites, in model and guide) are multiplied by ``kl_weight`` (warm-up), log p(x|z,y) by
``likelihood_weight`` (1, or 1 / (C S S) for its mean over the pixel values, as the paper's published code); in
:meth:`semi_supervised_model` the whole unlabelled term can be ramped up as well (``unlabelled_weight``).

Shapes: x (B, C, S, S) float in [0, 1]; y (B,) int64 class indices; K classes; under enumeration y is one-hot
(K, 1, K) and z (K, B, Z).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.contrib.autoname import scope
from torch import nn

from pyro_adgm.layers import check_decoder_norm
from pyro_adgm.likelihoods import LIKELIHOODS
from pyro_adgm.networks import conv_networks, mlp_networks

NETWORK_NAMES = ("aux_encoder", "classifier", "latent_encoder", "aux_decoder", "image_decoder")
CLASS_PRIORS = ("uniform", "learned")  # p(y): fixed (uniform unless class_prior is given), or learned
LABEL_WEIGHTS = ("prior", "equal")  # a labelled image's classification term: times K * p(y), or as it is
PRIOR_PARAMETER = "class_prior_logits"  # the attribute (and parameter name) of a learned p(y)


class SharedNoiseNormal(dist.Normal):
    """A Normal whose reparameterised draw uses one standard-normal noise for all enumerated values.

    loc/scale: (..., B, D) where "..." are enumeration dims; the noise is drawn with shape (B, D) and broadcast,
    so z_k = mu_k + sigma_k * eps for every class k. Each z_k keeps its exact distribution (the ELBO stays
    unbiased), but the bounds of different classes are compared under common random numbers, which takes most
    of the sampling noise out of the gradient that the unlabelled term sends to q(y|a,x).
    """

    def rsample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        noise_shape = sample_shape + (1,) * max(self.loc.dim() - 2, 0) + self.loc.shape[-2:]
        noise = torch.empty(noise_shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        return self.loc + self.scale * noise


def _check_widths(name: str, values) -> None:
    """Raise a ValueError naming ``name`` unless ``values`` is a list of positive integers."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):  # fmt: skip
        raise ValueError(f"{name}: expected positive integers, got {values!r}")


def kl_weighted(weight: float):
    """Scale the log densities of the sites inside by ``weight`` (0 removes them from the objective)."""
    if weight > 0:
        return poutine.scale(scale=float(weight))
    return poutine.mask(mask=False)


class ADGM(nn.Module):
    """The ADGM with its five networks; ``model``/``guide`` are the Pyro programs.

    Keyword arguments:
        num_classes: K.
        image_size: S, square images (B, C, S, S); up to 256 for the convolutional networks.
        a_dim, z_dim: sizes of the auxiliary and latent variables.
        architecture: ``"conv"`` (the chest X-ray networks) or ``"mlp"`` (the ADGM paper's MNIST networks).
        channels: widths of the stride-2 conv layers (as many are used as the image size needs).
        hidden: widths of the dense hidden layers of each head.
        dropout: dropout probability after each conv/dense layer.
        batch_norm: batch norm after the first layer of the MLP networks that read x (``"mlp"`` only; the
            convolutional networks always have it).
        likelihood: p(x|z,y): ``"gaussian"`` (a density on [0, 1], the paper's; the default),
            ``"discretized-logistic"`` (8-bit grey levels, log p <= 0; 6 points less accurate on PneumoniaMNIST's
            ``val`` at 10 labels per class, BENCHMARKS.md "Ablation of the root fixes"), ``"bernoulli"`` (binary x) or ``"bernoulli-grey"``
            (the Bernoulli cross-entropy of grey levels in [0, 1]).
        decoder_norm: normalisation inside the convolutional p(x|z,y), which sees the enumerated y: ``"group"``
            (per sample) or ``"batch"`` (batch statistics per enumerated class, so that one image's p(x|z,y)
            depends on its batch; kept to measure against).
        class_prior: pi (K,), uniform by default; with ``learn_class_prior`` the starting value.
        learn_class_prior: learn pi by maximising the bound (empirical Bayes): softmax of a parameter
            ``class_prior_logits`` (K,), which only the unlabelled term trains (the labelled images are drawn N
            per class, so their labels say nothing about how common each class is). With a fixed uniform pi the
            unlabelled term pulls the share of each class assigned by q(y|a,x) towards 1/K, which on data with
            unequal classes moves images of the common class into the rare one as its weight grows.
        prior_weighted_labels: multiply each labelled image's ``alpha * log q(y|a,x)`` term by K * pi_y (pi
            detached). The labelled images are drawn N per class, so the classification term alone fits
            q(y|a,x) to equal class shares; weighted, it fits the shares of p(y) (the label-shift correction
            of Saerens et al. 2002), which agrees with what the unlabelled term asks. Every weight is 1 under a
            fixed uniform pi; meant for ``learn_class_prior`` (or a known, non-uniform ``class_prior``).
        in_channels: C.
        networks: replacements for any of ``aux_encoder``, ``classifier``, ``latent_encoder``,
            ``aux_decoder``, ``image_decoder`` (see :mod:`pyro_adgm.networks` for their interfaces).
    """

    def __init__(
        self,
        *,
        num_classes: int = 2,
        image_size: int = 64,
        a_dim: int = 64,
        z_dim: int = 64,
        architecture: str = "conv",
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        hidden: Sequence[int] | None = None,
        dropout: float = 0.2,
        batch_norm: bool = True,
        likelihood: str = "gaussian",
        decoder_norm: str = "group",
        class_prior: Sequence[float] | None = None,
        learn_class_prior: bool = False,
        prior_weighted_labels: bool = False,
        in_channels: int = 1,
        networks: dict[str, nn.Module] | None = None,
        pyro_name: str = "adgm",
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2, got {num_classes}")
        for name, value in (("a_dim", a_dim), ("z_dim", z_dim), ("image_size", image_size), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        _check_widths("channels", channels)
        if hidden is not None:
            _check_widths("hidden", hidden)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        if architecture not in ("conv", "mlp"):
            raise ValueError(f"architecture: expected 'conv' or 'mlp', got {architecture!r}")
        check_decoder_norm(decoder_norm)
        if not batch_norm and architecture == "conv":
            raise ValueError("batch_norm: the convolutional networks always use batch norm; False needs architecture 'mlp'")
        networks = dict(networks or {})
        unknown = set(networks) - set(NETWORK_NAMES)
        if unknown:
            raise ValueError(f"networks: unknown name(s) {sorted(unknown)}; expected some of {NETWORK_NAMES}")
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels
        self.a_dim, self.z_dim = a_dim, z_dim
        self.likelihood = LIKELIHOODS[likelihood]()
        self.pyro_name = pyro_name
        hidden = tuple(hidden) if hidden is not None else ((256,) if architecture == "conv" else (500, 500))
        self.config = {
            "num_classes": num_classes, "image_size": image_size, "a_dim": a_dim, "z_dim": z_dim,
            "architecture": architecture, "channels": list(channels), "hidden": list(hidden), "dropout": dropout,
            "batch_norm": batch_norm,
            "likelihood": likelihood, "decoder_norm": decoder_norm, "in_channels": in_channels,
            "class_prior": list(class_prior) if class_prior is not None else None,
            "learn_class_prior": learn_class_prior, "prior_weighted_labels": prior_weighted_labels,
            "custom_networks": sorted(networks),
        }  # fmt: skip
        common = dict(image_size=image_size, num_classes=num_classes, a_dim=a_dim, z_dim=z_dim, in_channels=in_channels,
                      out_channels=self.likelihood.params_per_channel * in_channels, hidden=hidden, dropout=dropout)  # fmt: skip
        missing = [name for name in NETWORK_NAMES if name not in networks]
        if missing:
            defaults = (conv_networks(channels=channels, decoder_norm=decoder_norm, **common) if architecture == "conv"
                        else mlp_networks(batch_norm=batch_norm, **common))  # fmt: skip
            networks.update({name: defaults[name] for name in missing})
        for name in NETWORK_NAMES:
            self.add_module(name, networks[name])
        prior = torch.full((num_classes,), 1.0 / num_classes) if class_prior is None else torch.as_tensor(class_prior, dtype=torch.float)
        if prior.shape != (num_classes,) or (prior < 0).any() or abs(float(prior.sum()) - 1) > 1e-4:
            raise ValueError(f"class_prior: expected {num_classes} non-negative probabilities summing to 1")
        self.register_buffer("class_prior", prior)
        self.class_prior_logits = nn.Parameter(prior.clamp_min(1e-6).log()) if learn_class_prior else None
        self.prior_weighted_labels = prior_weighted_labels
        self._registered = False  # True while a semi-supervised program runs: it registered the weights already

    @classmethod
    def from_config(cls, config: dict) -> ADGM:
        """The model a saved ``config`` (:attr:`config`, without ``custom_networks``) describes; a config written
        before a setting existed gets the value that model ran with."""
        saved_before = {"decoder_norm": "batch", "likelihood": "gaussian"}
        return cls(**{**saved_before, **config})

    # helpers

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) -> one-hot float (B, K) in the dtype of the networks."""
        return F.one_hot(y.long(), self.num_classes).to(self.class_prior.dtype)

    def prior_probs(self) -> torch.Tensor:
        """pi (K,), the p(y) of the model: the learned one (``learn_class_prior``) or the fixed ``class_prior``."""
        if self.class_prior_logits is None:
            return self.class_prior
        return self.class_prior_logits.softmax(-1)

    @staticmethod
    def _plate(name: str, data_size: int | None, batch: int, device: torch.device):
        if data_size is None:
            return pyro.plate(name, batch, dim=-1)
        return pyro.plate(name, data_size, subsample=torch.arange(batch, device=device), dim=-1)

    # the probabilistic program

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, *, data_size: int | None = None,
              kl_weight: float = 1.0, alpha: float = 0.0, likelihood_weight: float = 1.0,
              plate_name: str = "data") -> None:  # fmt: skip
        """p(z) p(y) p(x|z,y) p(a|z,y,x), plus ``alpha * log q(y|a,x)``
        when y is observed (times K * pi_y with ``prior_weighted_labels``).

        x: (B, C, S, S) float in [0, 1]; y: (B,) int64 or None (unlabelled: y comes from the guide).
        data_size: N, the number of examples the batch stands for (plate scale N/B); None means B.
        likelihood_weight: the factor on log p(x|z,y) (1: the bound; 1 / (C S S): its mean over the pixel values,
            as the paper's published code weighs it).
        """
        self._register()
        batch = x.shape[0]
        y_onehot = None if y is None else self.one_hot(y)
        with self._plate(plate_name, data_size, batch, x.device):
            with kl_weighted(kl_weight):
                z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([batch, self.z_dim]).to_event(1))
            prior = self.prior_probs().to(x.dtype)
            if y_onehot is not None:
                prior = prior.detach()  # labels are drawn N per class: they do not inform pi
            prior = prior.expand(batch, self.num_classes)
            y_value = pyro.sample("y", dist.OneHotCategorical(probs=prior), obs=y_onehot)
            with poutine.scale(scale=float(likelihood_weight)):
                pyro.sample("x", self.likelihood(self.image_decoder(z=z, y=y_value)), obs=x)
            with kl_weighted(kl_weight):
                a_loc, a_scale = self.aux_decoder(x, z=z, y=y_value)
                a = pyro.sample("a", dist.Normal(a_loc, a_scale).to_event(1))
            if y_onehot is not None and alpha > 0:
                log_q_y = (y_onehot * self.classifier(x, a=a).log_softmax(-1)).sum(-1)
                if self.prior_weighted_labels:
                    log_q_y = log_q_y * (self.num_classes * (y_onehot * prior).sum(-1))  # prior: detached above
                pyro.factor("y_aux", alpha * log_q_y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, *, data_size: int | None = None,
              kl_weight: float = 1.0, alpha: float = 0.0, likelihood_weight: float = 1.0,
              plate_name: str = "data") -> None:  # fmt: skip
        """q(a|x) q(y|a,x) q(z|a,y,x); y is enumerated in parallel when not observed. Arguments as :meth:`model`."""
        self._register()
        batch = x.shape[0]
        with self._plate(plate_name, data_size, batch, x.device):
            with kl_weighted(kl_weight):
                a_loc, a_scale = self.aux_encoder(x)
                a = pyro.sample("a", dist.Normal(a_loc, a_scale).to_event(1))
            if y is None:
                logits = self.classifier(x, a=a)
                y_value = pyro.sample("y", dist.OneHotCategorical(logits=logits), infer={"enumerate": "parallel"})
            else:
                y_value = self.one_hot(y)
            with kl_weighted(kl_weight):
                z_loc, z_scale = self.latent_encoder(x, a=a, y=y_value)
                pyro.sample("z", SharedNoiseNormal(z_loc, z_scale).to_event(1))

    def semi_supervised_model(self, x_labelled, y_labelled, x_unlabelled, *, labelled_size=None, unlabelled_size=None,
                              kl_weight: float = 1.0, alpha: float = 0.0, unlabelled_weight: float = 1.0,
                              likelihood_weight: float = 1.0) -> None:  # fmt: skip
        """One step's program: a labelled and an unlabelled batch, sites prefixed ``labelled/``, ``unlabelled/``.

        Either batch may be None. With ``kl_weight`` and ``unlabelled_weight`` 1 the loss is an unbiased
        estimate of J^alpha over ``labelled_size`` + ``unlabelled_size`` examples; ``unlabelled_weight`` < 1
        scales the whole unlabelled term (its warm-up), 0 leaves it out. ``likelihood_weight``: as in :meth:`model`,
        for both batches.
        """
        self._semi_supervised(self.model, x_labelled, y_labelled, x_unlabelled, labelled_size, unlabelled_size,
                              kl_weight, alpha, unlabelled_weight, likelihood_weight)  # fmt: skip

    def semi_supervised_guide(self, x_labelled, y_labelled, x_unlabelled, *, labelled_size=None, unlabelled_size=None,
                              kl_weight: float = 1.0, alpha: float = 0.0, unlabelled_weight: float = 1.0,
                              likelihood_weight: float = 1.0) -> None:  # fmt: skip
        """The guide matching :meth:`semi_supervised_model`."""
        self._semi_supervised(self.guide, x_labelled, y_labelled, x_unlabelled, labelled_size, unlabelled_size,
                              kl_weight, alpha, unlabelled_weight, likelihood_weight)  # fmt: skip

    def _semi_supervised(self, program, x_l, y_l, x_u, size_l, size_u, kl_weight, alpha, unlabelled_weight,
                         likelihood_weight):  # fmt: skip
        # the weights are registered with Pyro once per step, by the guide (which SVI and every ELBO run with the
        # model), not once per batch in model and guide: each registration is a param site per weight through the
        # whole handler stack (benchmarks/results/host_overhead.md)
        if program == self.guide:
            pyro.module(self.pyro_name, self)
        self._registered = True
        try:
            if x_l is not None:
                with scope(prefix="labelled"):
                    program(x_l, y_l, data_size=size_l, kl_weight=kl_weight, alpha=alpha,
                            likelihood_weight=likelihood_weight, plate_name="labelled_data")  # fmt: skip
            if x_u is not None and unlabelled_weight > 0:
                with scope(prefix="unlabelled"), poutine.scale(scale=float(unlabelled_weight)):
                    program(x_u, None, data_size=size_u, kl_weight=kl_weight, likelihood_weight=likelihood_weight,
                            plate_name="unlabelled_data")  # fmt: skip
        finally:
            self._registered = False

    def _register(self) -> None:
        """Register the weights with Pyro's param store (so that SVI steps them), unless the caller did."""
        if not self._registered:
            pyro.module(self.pyro_name, self)

    # queries

    @contextlib.contextmanager
    def evaluating(self):
        """Switch to eval mode (batch-norm running statistics, no dropout) and back, without gradients."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def classify(self, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """Class probabilities (B, K) from q(y|a,x), with a at the mean of q(a|x) (``num_samples=0``) or
        averaged over ``num_samples`` draws of a. Runs in eval mode."""
        with self.evaluating():
            a_loc, a_scale = self.aux_encoder(x)
            if num_samples <= 0:
                return self.classifier(x, a=a_loc).softmax(-1)
            a = dist.Normal(a_loc, a_scale).sample((num_samples,))
            return self.classifier(x, a=a).softmax(-1).mean(0)

    def generate(self, y: int | torch.Tensor, n: int = 16, *, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images of class ``y``: the image of p(x|z,y) (its mean; the median level of a discretised logistic)
        for n draws z ~ p(z) (or the given z (n, Z)).
        (n, C, S, S) in [0, 1], eval mode."""
        device = self.class_prior.device
        if z is None:
            z = torch.randn(n, self.z_dim, device=device, dtype=self.class_prior.dtype)
        n = z.shape[0]
        labels = torch.full((n,), int(y), device=device) if not torch.is_tensor(y) else y.to(device).expand(n)
        z, y_onehot = z.to(device), self.one_hot(labels)
        with self.evaluating():
            return self.likelihood.image(self.image_decoder(z=z, y=y_onehot))
