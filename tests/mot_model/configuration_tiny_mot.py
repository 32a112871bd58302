"""Config of TinyMoT, a tiny Lance-like mixture-of-transformers model (test fixture, custom code).

The decoder is Qwen2-shaped; every layer holds understanding-path modules and their
generation-expert twins (``*_moe_gen``). ``vit_config`` sizes the small vision tower; its
``image_size`` key is what makes AutoRound's multimodal detection fire on the whole model.
"""

from transformers import PretrainedConfig


class TinyMoTConfig(PretrainedConfig):
    model_type = "tiny_mot"

    def __init__(self, vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-6, latent_dim=16,
                 max_latent_tokens=64, latent_token_id=None, image_token_id=None, vit_config=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.latent_dim = latent_dim
        self.max_latent_tokens = max_latent_tokens
        self.latent_token_id = latent_token_id
        self.image_token_id = image_token_id
        self.vit_config = dict({"hidden_size": 32, "image_size": 28, "patch_size": 14, "num_layers": 2}, **(vit_config or {}))
        super().__init__(**kwargs)
