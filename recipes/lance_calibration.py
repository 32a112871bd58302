"""Calibration hook for recipes/lance-3b.toml: text-to-image denoising calls for Lance's generation path.

hubpub calls ``generation_calls(model, tokenizer, samples=N, seqlen=L, seed=S)`` with the loaded
BF16 model and records every ``model(**call)`` it yields; each call's ``input_ids`` are (1, L).
A call is one denoising step of the text-to-image path: a caption, then latent tokens whose
embeddings the model builds from the noised latents and the timestep, so the ``*_moe_gen``
experts see real activations (text alone never reaches them).

The keyword arguments (``latents``, ``timesteps``) and config keys (``latent_token_id``,
``latent_dim``) follow the calling convention of the tiny mixture-of-transformers model in
tests/mot_model, on which this path is tested; check them against the forward() of the Lance
revision you pin, and adapt the two marked lines if its names differ.
"""

import torch

CAPTIONS = [
    "a photograph of a red fox in fresh snow", "an oil painting of a harbour at dusk",
    "a bowl of ramen on a wooden table, top view", "a watercolor map of an imaginary island",
    "a city street in the rain at night, neon signs", "a close-up of a hummingbird drinking from a flower",
]


def generation_calls(model, tokenizer, *, samples, seqlen, seed):
    gen = torch.Generator().manual_seed(seed)
    latent_id = model.config.latent_token_id  # adapt: the token that marks a latent position
    latent_dim = model.config.latent_dim  # adapt: channels of one latent token
    for i in range(samples):
        caption = tokenizer(CAPTIONS[i % len(CAPTIONS)], add_special_tokens=False)["input_ids"][: seqlen // 4]
        n_latent = seqlen - len(caption)
        clean = torch.randn(1, n_latent, latent_dim, generator=gen)
        t = torch.rand(1, generator=gen)  # rectified flow: x_t = (1 - t) x_0 + t noise
        noised = (1 - t) * clean + t * torch.randn(clean.shape, generator=gen)
        yield {"input_ids": torch.tensor([caption + [latent_id] * n_latent]), "latents": noised, "timesteps": t}
