"""``auto_round``: AutoRound's own format (quant_method "auto-round"); loads with auto-round installed.

4-bit asymmetric weights are packed in the GPTQ-with-zero-points layout (packing_format
"auto_round:auto_gptq"): AutoRound's default for them, the AWQ layout, fails to pack in 0.16.1
(``WQLinear_GEMM.__init__() got an unexpected keyword argument 'weight_dtype'``). Other widths
keep AutoRound's own packing (the GPTQ layout does not reload at 3 bits asymmetric).
"""

from __future__ import annotations

from . import AutoRoundExport, formats

formats.register(AutoRoundExport(
    name="auto_round",
    display_name="AutoRound",
    quant_method="auto-round",
    install_line="auto-round",
    cpu_kernels="auto-round-lib",
    reference_url="https://github.com/intel/auto-round",
    bits=(2, 3, 4, 8),
    autoround_format_for={(4, False): "auto_round:auto_gptq"},
    refused={(8, False): "8-bit asymmetric weights cannot be exported by auto-round (its kernels store zero points"
                         " up to 7 bits); set sym = true, or use bits = 4 with sym = false"},
))
