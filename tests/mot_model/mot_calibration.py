"""Calibration hook for the tiny MoT model: text-to-image denoising calls for the generation path.

hubpub calls ``generation_calls(model, tokenizer, samples=N, seqlen=L, seed=S)`` and records
every forward call it yields (keyword arguments of ``model(**call)``); each call's input_ids
are (1, L). Here: a short caption, then latent tokens whose embeddings come from noised image
latents at a random timestep, as one denoising step of Lance's text-to-image path.
"""

import torch

CAPTIONS = ["a red circle on a white table", "two cats asleep in the sun", "a lighthouse at night",
            "a bowl of green apples", "a city street in the rain", "mountains under snow"]


def generation_calls(model, tokenizer, *, samples, seqlen, seed):
    gen = torch.Generator().manual_seed(seed)
    latent_id = model.config.latent_token_id
    for i in range(samples):
        caption = tokenizer(CAPTIONS[i % len(CAPTIONS)], add_special_tokens=False)["input_ids"][: seqlen // 2]
        n_latent = seqlen - len(caption)
        clean = torch.randn(1, n_latent, model.config.latent_dim, generator=gen)
        t = torch.rand(1, generator=gen)
        noised = (1 - t) * clean + t * torch.randn(clean.shape, generator=gen)
        ids = torch.tensor([caption + [latent_id] * n_latent])
        yield {"input_ids": ids, "latents": noised, "timesteps": t}
