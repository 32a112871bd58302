"""``auto_gptq``: the GPTQ layout (qweight / qzeros / scales / g_idx, quant_method "gptq").

transformers wants gptqmodel (or optimum) for it; without them hubpub loads it through
auto-round's own kernels, which read the same layout (see :meth:`GPTQExport.load_kwargs`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from . import AutoRoundExport, formats


def has_gptq_backend() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("gptqmodel", "optimum"))


@dataclass
class GPTQExport(AutoRoundExport):
    def load_kwargs(self, qconfig: dict[str, Any]) -> dict[str, Any]:
        if has_gptq_backend():
            return {}
        import transformers

        # auto-round's kernels read the GPTQ / AWQ layouts when gptqmodel is absent
        return {"quantization_config": transformers.AutoRoundConfig()}


formats.register(GPTQExport(
    name="auto_gptq",
    display_name="GPTQ",
    quant_method="gptq",
    install_line="gptqmodel optimum",
    cpu_kernels="auto-round-lib",
    reference_url="https://github.com/ModelCloud/GPTQModel",
    bits=(2, 3, 4, 8),
    requires_asym=(("auto_round_kernel", "auto-round-lib"),),  # zero points load on CPU through its kernels
    refused={(3, False): "3-bit asymmetric GPTQ weights do not load back (transformers' GPTQ loader fails on them);"
                         " use format 'auto_round', or sym = true",
             (8, False): "8-bit asymmetric GPTQ weights cannot be exported by auto-round (vLLM serves W8 GPTQ"
                         " symmetric only); set sym = true, or use bits = 4 with sym = false"},
))
