"""TinyMoT: a tiny Lance-like mixture-of-transformers model, loaded with trust_remote_code.

Tensor names follow Lance / BAGEL: a ViT under ``vit_model.`` whose layers sit in an
``nn.ModuleList`` (``vit_model.encoder.N``), a ``connector`` into the decoder's width, a
decoder under ``language_model.model.layers.N`` whose every layer has understanding modules
(``self_attn.q_proj``, ``mlp.gate_proj``, ``input_layernorm``, ...) and generation-expert twins
(``self_attn.q_proj_moe_gen``, ``mlp_moe_gen.gate_proj``, ``input_layernorm_moe_gen``, ...),
``vae2llm`` / ``llm2vae`` between the latent space and the decoder, a ``time_embedder`` and a
``latent_pos_embed``.

Routing is by token type, as in Lance: tokens equal to ``latent_token_id`` are generation
tokens (their embeddings come from the latents, the timestep and the latent positions), every
other token is an understanding token. Each layer runs a token through one path's norms and
linears only; attention is shared over the whole sequence. So text alone never reaches a
``*_moe_gen`` linear: calibrating the generation path needs forward calls with latents, e.g.
``forward(input_ids=..., latents=..., timesteps=...)``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_tiny_mot import TinyMoTConfig


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def routed(x, gen_mask, und, gen):
    """und(x) on understanding rows, gen(x) on generation rows; each module sees only its rows."""
    und_rows, gen_rows = x[~gen_mask], x[gen_mask]
    first = und(und_rows)
    out = x.new_empty(*x.shape[:-1], first.shape[-1])
    out[~gen_mask] = first
    if gen_rows.shape[0]:
        out[gen_mask] = gen(gen_rows)
    return out


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(self, name, nn.Linear(h, h, bias=True))
            setattr(self, name + "_moe_gen", nn.Linear(h, h, bias=True))
        self.o_proj = nn.Linear(h, h, bias=False)
        self.o_proj_moe_gen = nn.Linear(h, h, bias=False)

    def forward(self, x, gen_mask):
        b, t, h = x.shape
        q, k, v = (routed(x, gen_mask, getattr(self, n), getattr(self, n + "_moe_gen")) for n in ("q_proj", "k_proj", "v_proj"))
        q, k, v = (y.view(b, t, self.heads, h // self.heads).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, h)
        return routed(y, gen_mask, self.o_proj, self.o_proj_moe_gen)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoTDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.mlp_moe_gen = MLP(config)
        self.input_layernorm = RMSNorm(h, eps)
        self.input_layernorm_moe_gen = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(h, eps)

    def forward(self, hidden_states, gen_mask=None, **kwargs):
        if gen_mask is None:
            gen_mask = torch.zeros(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
        x = routed(hidden_states, gen_mask, self.input_layernorm, self.input_layernorm_moe_gen)
        hidden_states = hidden_states + self.self_attn(x, gen_mask)
        x = routed(hidden_states, gen_mask, self.post_attention_layernorm, self.post_attention_layernorm_moe_gen)
        return hidden_states + routed(x, gen_mask, self.mlp, self.mlp_moe_gen)


class MoTDecoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, inputs_embeds, gen_mask):
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        h = inputs_embeds + self.embed_positions(positions)[None].to(inputs_embeds.dtype)
        for layer in self.layers:
            h = layer(h, gen_mask=gen_mask)
        return routed(h, gen_mask, self.norm, self.norm_moe_gen)


class LanguageModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.model = MoTDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class TinyMoTLanguageModel(PreTrainedModel, GenerationMixin):
    """The decoder alone (``model`` + ``lm_head``), as the model's own code defines it: what
    ``[quantize.split] architecture = "TinyMoTLanguageModel"`` extracts and quantizes."""

    config_class = TinyMoTConfig
    base_model_prefix = "tiny_mot_lm"
    _no_split_modules = ["MoTDecoderLayer"]

    def __init__(self, config):
        super().__init__(config)
        self.model = MoTDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.05)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        gen_mask = input_ids == self.config.latent_token_id
        logits = self.lm_head(self.model(self.model.embed_tokens(input_ids), gen_mask))
        return CausalLMOutput(logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class ViTLayer(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.fc1 = nn.Linear(size, 2 * size)
        self.fc2 = nn.Linear(2 * size, size)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ViT(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, vc["hidden_size"], vc["patch_size"], vc["patch_size"])
        self.encoder = nn.ModuleList(ViTLayer(vc["hidden_size"]) for _ in range(vc["num_layers"]))

    def forward(self, pixels):
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        for layer in self.encoder:
            x = layer(x)
        return x


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, freq=32):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = self.freq // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * 1000 * f[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class LatentPosEmbed(nn.Module):
    def __init__(self, tokens, hidden):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(tokens, hidden))

    def forward(self, n):
        return self.pos_embed[:n]


class TinyMoTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TinyMoTConfig
    base_model_prefix = "tiny_mot"
    _no_split_modules = ["MoTDecoderLayer"]

    def __init__(self, config):
        super().__init__(config)
        vc, h = config.vit_config, config.hidden_size
        self.vit_model = ViT(vc)
        self.connector = nn.Sequential(nn.Linear(vc["hidden_size"], h), nn.GELU(), nn.Linear(h, h))
        self.language_model = LanguageModel(config)
        self.vae2llm = nn.Linear(config.latent_dim, h)
        self.llm2vae = nn.Linear(h, config.latent_dim)
        self.time_embedder = TimestepEmbedder(h)
        self.latent_pos_embed = LatentPosEmbed(config.max_latent_tokens, h)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.05)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, LatentPosEmbed):
            nn.init.normal_(module.pos_embed, std=0.05)

    def get_input_embeddings(self):
        return self.language_model.model.embed_tokens

    def embed(self, input_ids, latents=None, timesteps=None, pixel_values=None):
        embeds = self.language_model.model.embed_tokens(input_ids)
        gen_mask = input_ids == self.config.latent_token_id
        if latents is not None:  # generation tokens: latents + timestep + latent positions
            n = int(gen_mask[0].sum())
            lat = self.vae2llm(latents.to(embeds.dtype)) + self.time_embedder(timesteps)[:, None] + self.latent_pos_embed(n)[None]
            embeds = embeds.clone()
            embeds[gen_mask] = lat.reshape(-1, lat.shape[-1]).to(embeds.dtype)
        if pixel_values is not None:  # image tokens: ViT patches through the connector
            img = self.connector(self.vit_model(pixel_values.to(embeds.dtype)))
            mask = input_ids == self.config.image_token_id
            embeds = embeds.clone()
            embeds[mask] = img.reshape(-1, img.shape[-1])[: int(mask.sum())].to(embeds.dtype)
        return embeds, gen_mask

    def forward(self, input_ids=None, attention_mask=None, latents=None, timesteps=None, pixel_values=None,
                labels=None, **kwargs):
        embeds, gen_mask = self.embed(input_ids, latents, timesteps, pixel_values)
        hidden = self.language_model.model(embeds, gen_mask)
        logits = self.language_model.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        if latents is not None:  # the velocity the generation path predicts (what a denoising step uses)
            self.last_velocity = self.llm2vae(hidden[gen_mask])
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # no KV cache: every step sees the whole sequence
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def denoise_step(self, input_ids, latents, timesteps):
        """One text-to-image denoising step: the predicted velocity of the latents."""
        self(input_ids=input_ids, latents=latents, timesteps=timesteps)
        return self.last_velocity
