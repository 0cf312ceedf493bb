"""torch.ao dynamic quantization of lstmkit's layers.

``torch.ao.quantization.quantize_dynamic`` picks modules by exact type: a spec naming
``nn.LSTM`` (as its default spec does) would pass an ``lstmkit.LSTM`` by and leave it in float32
without a word. Two hooks close that gap without changing torch:

- a layer's ``qconfig`` setter, which ``propagate_qconfig_`` calls on every module, reads the spec
  that call is applying (the frame of torch's ``_propagate_qconfig_helper``) and takes the qconfig
  given to the layer's torch counterpart when the spec names neither the layer's own type nor its
  path: what torch would do for an ``nn.LSTM`` in its place;
- ``DynamicQuantized.from_float``, entered in torch's default dynamic mapping for each lstmkit
  type, converts a standard layer to torch's dynamic quantized module through the equivalent
  ``torch.nn`` module (``layer.to_torch()``) and raises RuntimeError for a variant (peepholes,
  coupled gates, GRU reset_after=False, LSTM proj_size), which torch's modules cannot hold.

A spec that names neither leaves the layer alone, as torch leaves an ``nn.LSTM``. A ``mapping``
passed by hand must name the lstmkit types itself (``{lstmkit.LSTM: DynamicQuantized, ...}``).
"""

from __future__ import annotations

import sys

from torch import nn

_QCONFIG = "_lstmkit_qconfig"
_PROPAGATE = ("torch.ao.quantization.quantize", "_propagate_qconfig_helper")


def _propagation_frame():
    """The locals of torch's ``_propagate_qconfig_helper`` when it is setting a qconfig now."""
    frame = sys._getframe(2)
    for _ in range(4):                       # the setter, nn.Module.__setattr__, the helper
        if frame is None:
            return None
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) == _PROPAGATE:
            return frame.f_locals
        frame = frame.f_back
    return None


class Quantizable(nn.Module):
    """A layer or cell that torch.ao's dynamic quantization treats as its torch counterpart."""

    torch_counterpart: type[nn.Module]

    @property
    def qconfig(self):
        try:
            return self.__dict__[_QCONFIG]
        except KeyError:                     # unset: torch's getattr(m, "qconfig", parent's)
            raise AttributeError("qconfig") from None

    @qconfig.setter
    def qconfig(self, value) -> None:
        scope = _propagation_frame()
        if scope is not None and _QCONFIG not in self.__dict__:     # not set by the user
            spec, prefix = scope.get("qconfig_dict") or {}, scope.get("prefix", "")
            if type(self) not in spec and prefix not in spec and self.torch_counterpart in spec:
                value = spec[self.torch_counterpart]
        if value is not None:
            register()
            if scope is not None:
                self.check_quantizable()
        self.__dict__[_QCONFIG] = value

    @qconfig.deleter
    def qconfig(self) -> None:
        self.__dict__.pop(_QCONFIG, None)

    def check_quantizable(self) -> None:
        """RuntimeError unless torch.ao has a dynamic quantized form of this configuration."""
        name = type(self).__name__
        variant = [k for k, v in (("peephole", False), ("coupled", False), ("reset_after", True),
                                  ("layer_norm", False)) if getattr(self, k, v) != v]
        if getattr(self, "proj_size", 0):
            variant.append("proj_size")
        if variant:
            raise RuntimeError(
                f"{name}: torch.ao.quantization asked to quantize it as "
                f"{self.torch_counterpart.__module__}.{self.torch_counterpart.__name__}, whose "
                f"dynamic quantized form has no {', '.join(variant)}; keep this layer in float "
                f"(set its qconfig to None before quantize_dynamic, or leave "
                f"nn.{self.torch_counterpart.__name__} out of the spec)")


class DynamicQuantized:
    """The entry of torch's dynamic quantization mapping for lstmkit's types."""

    @staticmethod
    def from_float(module: Quantizable, use_precomputed_fake_quant: bool = False) -> nn.Module:
        """torch's dynamic quantized module for a standard lstmkit layer or cell."""
        from torch.ao.quantization.quantization_mappings import (
            DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS as mapping,
        )
        module.check_quantizable()
        float_module = module.to_torch()
        float_module.qconfig = module.qconfig
        return mapping[type(float_module)].from_float(float_module)


QUANTIZABLE: list[type[Quantizable]] = []          # filled by lstmkit.layers


def register() -> None:
    """Enter each lstmkit type whose counterpart torch quantizes in torch's default dynamic
    mapping, once torch.ao.quantization is in use (importing it costs time, so not before)."""
    from torch.ao.quantization.quantization_mappings import (
        DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS as mapping,
    )
    for cls in QUANTIZABLE:
        if cls.torch_counterpart in mapping:
            mapping.setdefault(cls, DynamicQuantized)
