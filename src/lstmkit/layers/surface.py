"""torch.nn.RNNBase's surface, which libraries read: ``mode``, ``_flat_weights``,
``all_weights``, ``flatten_parameters()``, torch's ``repr``, ``to_torch()``; and the variant
keywords lstmkit adds to a repr."""

from __future__ import annotations

import warnings

from torch import Tensor, nn

# lstmkit's keywords and their defaults: printed in a repr, named in errors, where they differ
VARIANT_DEFAULTS = {"peephole": False, "coupled": False, "reset_after": True,
                    "layer_norm": False, "weight_drop": 0.0, "input_dropout": 0.0,
                    "recurrent_dropout": 0.0, "zoneout": 0.0}


def _variant(module: nn.Module) -> str:
    """The variant keywords a module differs by, e.g. "peephole=True, coupled=True"."""
    return ", ".join(f"{k}={getattr(module, k)}" for k, default in VARIANT_DEFAULTS.items()
                     if getattr(module, k, default) != default)


def _lstmkit_repr(module: nn.Module) -> str:
    """What a repr adds to torch's: the variant keywords (they change the equations). The engine
    (how the same numbers are computed, ``module.engine``) is left out, so that a standard
    layer's repr is torch's on every engine, as code comparing reprs expects."""
    variant = _variant(module)
    return ", " + variant if variant else ""



class TorchRNNSurface:
    """Mixed into ``_Recurrent``: names as torch's, lists kept current by computing them on
    access (after .to(), load_state_dict or assigning a new Parameter)."""

    @property
    def mode(self) -> str:
        """torch's name of the recurrence: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"."""
        if self.family == "rnn":
            return "RNN_" + self.cell.nonlinearity.upper()
        return self.family.upper()

    # ``_flat_weights_names`` lists torch's parameters only, per layer and direction w_ih, w_hh,
    # [b_ih, b_hh], [w_hr]: that list feeds torch's fused kernels, which have no peepholes, so a
    # peephole's ``weight_ch_l{k}`` appears only in ``_all_weights`` / ``all_weights``, last in
    # its layer and direction.
    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction, as torch's ``all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """torch packs the weights for cuDNN here; the engines here read them as they are."""

    def extra_repr(self) -> str:
        """torch's repr for a standard layer, e.g. ``LSTM(10, 20, num_layers=2)``; lstmkit's
        variant keywords follow where they differ from their defaults."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s + _lstmkit_repr(self)

    def to_torch(self) -> nn.Module:
        """The equivalent ``torch.nn`` module: same configuration, device, dtype and training
        mode, a copy of the parameters. ValueError for a variant torch has no form of."""
        if not self._standard:
            raise ValueError(f"{type(self).__name__}: {_variant(self)} has no torch.nn form")
        w = self.weights(0).w_ih
        kw = {"num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
              "dropout": self.dropout, "bidirectional": self.bidirectional,
              "device": w.device, "dtype": w.dtype}
        if self.family == "lstm":
            kw["proj_size"] = self.proj_size
        if self.family == "rnn":
            kw["nonlinearity"] = self.cell.nonlinearity
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # dropout with one layer, warned already
            module = self.torch_counterpart(self.input_size, self.hidden_size, **kw)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

