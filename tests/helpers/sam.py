"""A tiny random segment-anything model and a predictor spy, for the mask tests."""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)


def infrared_scene(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy infrared frame with a hot disc (the target), a cold disc and a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = 0.3 + 0.1 * xx / w + rng.normal(0, 0.02, (h, w))
    hot = (yy - 40) ** 2 + (xx - 80) ** 2 <= 8**2
    image[hot] = 0.85
    image[(yy - 60) ** 2 + (xx - 30) ** 2 <= 8**2] = 0.02
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), hot


def tiny_sam():
    """A randomly initialised SAM built from segment-anything's own modules (64 px input)."""
    torch.manual_seed(0)
    size, patch, dim = 64, 16, 32
    encoder = ImageEncoderViT(
        img_size=size, patch_size=patch, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0,
        out_chans=dim, qkv_bias=True, use_rel_pos=False, window_size=0, global_attn_indexes=(),
    )  # fmt: skip
    prompts = PromptEncoder(
        embed_dim=dim, image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size), mask_in_chans=4,
    )  # fmt: skip
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
        transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16,
    )  # fmt: skip
    return Sam(encoder, prompts, decoder, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])


class SpyPredictor:
    """Wraps a real ``SamPredictor`` and records every prompt and its proposals."""

    def __init__(self, predictor):
        self.predictor, self.images, self.calls = predictor, [], []

    def set_image(self, image):
        self.images.append(image)
        self.predictor.set_image(image)

    def predict(self, **kwargs):
        out = self.predictor.predict(**kwargs)
        self.calls.append((kwargs, out))
        return out
