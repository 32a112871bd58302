"""Config of TinyLocate, a tiny LocateAnything-like grounding model (test fixture, custom code).

``llm_config`` is the Qwen2 decoder's config (the sub-config hubpub's split-and-repack reads);
``vision_config`` sizes the small vision encoder.
"""

from transformers import PretrainedConfig, Qwen2Config


class TinyLocateConfig(PretrainedConfig):
    model_type = "tiny_locate"
    sub_configs = {"llm_config": Qwen2Config}

    def __init__(self, vision_config=None, llm_config=None, **kwargs):
        self.vision_config = dict({"hidden_size": 32, "image_size": 56, "patch_size": 14}, **(vision_config or {}))
        if llm_config is None or isinstance(llm_config, dict):
            llm_config = Qwen2Config(**(llm_config or {}))
        self.llm_config = llm_config
        super().__init__(**kwargs)
