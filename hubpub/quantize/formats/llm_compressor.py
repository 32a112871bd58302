"""``llm_compressor``: compressed-tensors' pack-quantized layout (quant_method "compressed-tensors"),
what vLLM and llm-compressor read; writing and loading need the compressed-tensors package."""

from __future__ import annotations

from . import AutoRoundExport, formats

formats.register(AutoRoundExport(
    name="llm_compressor",
    display_name="compressed-tensors (llm-compressor)",
    quant_method="compressed-tensors",
    install_line="compressed-tensors",
    reference_url="https://github.com/vllm-project/llm-compressor",
    bits=(4, 8),
    sym=(True,),  # asymmetric packs, but transformers reloads it with mismatched shapes
    requires=(("compressed_tensors", "compressed-tensors"),),
))
