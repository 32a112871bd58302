"""``auto_awq``: the AWQ GEMM layout (quant_method "awq"): 4-bit, asymmetric (zero points) only.

On CPU it loads through auto-round's kernels, which need the auto-round-lib package.
"""

from __future__ import annotations

from .auto_gptq import GPTQExport
from . import formats

formats.register(GPTQExport(
    name="auto_awq",
    display_name="AWQ",
    quant_method="awq",
    install_line="autoawq",
    cpu_kernels="auto-round-lib",
    reference_url="https://github.com/casper-hansen/AutoAWQ",
    bits=(4,),
    sym=(False,),
    refused={(4, True): "format 'auto_awq' stores zero points: set sym = false, or pick format 'auto_round'"},
    requires=(("auto_round_kernel", "auto-round-lib"),),
))
