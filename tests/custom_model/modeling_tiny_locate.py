"""TinyLocate: a tiny LocateAnything-like grounding model, loaded with trust_remote_code.

Structure (tensor names as in LocateAnything): a small vision encoder under ``vision_model.``,
an ``mlp1`` projector into the decoder's width, a Qwen2 decoder under ``language_model.``
(``language_model.model.layers.*``, ``language_model.lm_head.weight``) and a ``box_head``.
The image's patch embeddings are put in front of the prompt's token embeddings.

Why it answers with valid boxes: a random tiny model would never emit ``<box>...</box>`` by
itself, so its generation methods decode coordinates under a constrained grammar, the way a
real grounding model's post-processing turns its predictions into boxes. The numbers are the
model's own predictions (so quantizing the decoder changes them), only the format is fixed:

* ``generate_slow``: autoregressive constrained decoding; each coordinate is 3 digits, each
  digit the argmax of the decoder's next-token logits restricted to the tokens "0".."9";
* ``generate_fast``: one forward pass; ``box_head`` regresses the 4 coordinates from the last
  hidden state (parallel decoding);
* ``generate_hybrid``: the mean of the fast and slow coordinates.
* ``locate(image, query, tokenizer, mode="fast")``: the same decoders behind an API of the
  model's own (one image, a query, a ``mode`` keyword), the shape of a real model's API that
  a recipe maps with ``arguments`` / ``custom_kwargs`` instead of editing the model's code.

Coordinates are on a 0-1000 scale, ordered so x1 <= x2 and y1 <= y2. Tasks: ``ground`` (one
box), ``detect`` (two boxes; the second decoded with the first in the context), ``point``
(the centre of the ground box) and ``answering`` (plain greedy text).
"""

import torch
from torch import nn
from transformers import PreTrainedModel, Qwen2ForCausalLM

from .configuration_tiny_locate import TinyLocateConfig

MEAN = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
STD = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)


class TinyVisionEncoder(nn.Module):
    def __init__(self, hidden_size, image_size, patch_size):
        super().__init__()
        patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, hidden_size, patch_size, patch_size)
        self.position = nn.Parameter(torch.zeros(1, patches, hidden_size))
        self.norm = nn.LayerNorm(hidden_size)
        self.fc = nn.Linear(hidden_size, hidden_size)

    def forward(self, pixels):
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.position
        return x + self.fc(torch.tanh(self.norm(x)))


class TinyLocateModel(PreTrainedModel):
    config_class = TinyLocateConfig
    base_model_prefix = "tiny_locate"
    _no_split_modules = ["Qwen2DecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        vc, hidden = config.vision_config, config.llm_config.hidden_size
        self.vision_model = TinyVisionEncoder(vc["hidden_size"], vc["image_size"], vc["patch_size"])
        self.mlp1 = nn.Sequential(nn.LayerNorm(vc["hidden_size"]), nn.Linear(vc["hidden_size"], hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.language_model = Qwen2ForCausalLM(config.llm_config)
        self.box_head = nn.Linear(hidden, 4)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.05)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ inputs
    def _pixels(self, image):
        size = self.config.vision_config["image_size"]
        data = torch.tensor(list(image.convert("RGB").resize((size, size)).getdata()), dtype=torch.float32)
        pixels = (data.view(size, size, 3).permute(2, 0, 1) / 255 - MEAN) / STD
        return pixels.unsqueeze(0).to(self.device, self.vision_model.patch_embed.weight.dtype)

    def _embeds(self, tokenizer, images, text):
        ids = tokenizer(text, return_tensors="pt")["input_ids"].to(self.device)
        embed = self.language_model.get_input_embeddings()
        parts = [self.mlp1(self.vision_model(self._pixels(img))) for img in images]
        text_embeds = embed(ids)
        return torch.cat([p.to(text_embeds.dtype) for p in parts] + [text_embeds], dim=1)

    def _next(self, embeds):
        out = self.language_model(inputs_embeds=embeds, output_hidden_states=True)
        return out.logits[0, -1].float(), out.hidden_states[-1][0, -1]

    # ------------------------------------------------------------------ decoders
    def _digit_ids(self, tokenizer):
        return torch.tensor([tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)], device=self.device)

    def _slow_box(self, tokenizer, images, text):
        embed = self.language_model.get_input_embeddings()
        digits = self._digit_ids(tokenizer)
        comma = torch.tensor(tokenizer(",")["input_ids"], device=self.device)
        embeds = self._embeds(tokenizer, images, text + "<box>")
        coords = []
        for c in range(4):
            value = 0
            for _ in range(3):
                logits, _ = self._next(embeds)
                d = int(logits[digits].argmax())
                value = value * 10 + d
                embeds = torch.cat([embeds, embed(digits[d : d + 1]).unsqueeze(0)], dim=1)
            coords.append(float(value))
            if c < 3:
                embeds = torch.cat([embeds, embed(comma).unsqueeze(0)], dim=1)
        return coords

    def _fast_box(self, tokenizer, images, text):
        _, hidden = self._next(self._embeds(tokenizer, images, text + "<box>"))
        return [float(v) for v in torch.sigmoid(self.box_head(hidden).float()) * 999]

    def _box(self, decoder, tokenizer, images, text):
        if decoder == "slow":
            c = self._slow_box(tokenizer, images, text)
        elif decoder == "fast":
            c = self._fast_box(tokenizer, images, text)
        else:
            s, f = self._slow_box(tokenizer, images, text), self._fast_box(tokenizer, images, text)
            c = [(a + b) / 2 for a, b in zip(s, f)]
        x1, x2 = sorted((round(c[0]), round(c[2])))
        y1, y2 = sorted((round(c[1]), round(c[3])))
        return x1, y1, x2, y2

    @torch.inference_mode()
    def _locate(self, decoder, tokenizer, images, prompt, task, max_new_tokens=32, **_ignored):
        task = task or "ground"
        if task == "answering":
            embeds = self._embeds(tokenizer, images, prompt)
            ids = self.language_model.generate(inputs_embeds=embeds, max_new_tokens=max_new_tokens, do_sample=False,
                                               pad_token_id=tokenizer.pad_token_id)
            return tokenizer.decode(ids[0], skip_special_tokens=True)
        if task == "detect":
            first = "<box>{},{},{},{}</box>".format(*self._box(decoder, tokenizer, images, prompt))
            second = "<box>{},{},{},{}</box>".format(*self._box(decoder, tokenizer, images, prompt + first))
            return f"<ref>{prompt}</ref>{first}{second}"
        x1, y1, x2, y2 = self._box(decoder, tokenizer, images, prompt)
        if task == "point":
            return f"<point>{(x1 + x2) // 2},{(y1 + y2) // 2}</point>"
        if task == "ground":
            return f"<ref>{prompt}</ref><box>{x1},{y1},{x2},{y2}</box>"
        raise ValueError(f"unknown task {task!r}: use ground, detect, point or answering")

    def generate_slow(self, tokenizer, images, prompt, task=None, **kwargs):
        return self._locate("slow", tokenizer, images, prompt, task, **kwargs)

    def generate_fast(self, tokenizer, images, prompt, task=None, **kwargs):
        return self._locate("fast", tokenizer, images, prompt, task, **kwargs)

    def generate_hybrid(self, tokenizer, images, prompt, task=None, **kwargs):
        return self._locate("hybrid", tokenizer, images, prompt, task, **kwargs)

    # ------------------------------------------------------------------ a model's own API
    def locate(self, image, query, tokenizer, mode="fast"):
        """The model's own grounding call, in its own terms (one image, a query, a decoder
        ``mode``): not hubpub's convention. A recipe reaches it with ``arguments`` and
        ``custom_kwargs`` (see README "Custom generation modes")."""
        if mode not in ("fast", "slow", "hybrid"):
            raise ValueError(f"unknown mode {mode!r}: use fast, slow or hybrid")
        return self._locate(mode, tokenizer, [image], query, "ground")
