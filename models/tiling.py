"""Exact tiled CoCoNet inference in bounded memory.

CoCoNet is local except for its channel attention: each MAM's C x C energy ``E = q kᵀ`` sums over
every pixel of the image. That sum splits exactly over tiles, so ``fuse_tiled`` makes two passes:

1. Each tile, cut with a halo of ``min(halo, ENERGY_HALO)`` pixels, goes through the encoder and
   the VGG side taps; each MAM's energy is summed over the tile's *interior* only (q and k are
   convolved over the whole crop first), so every pixel counts once. The sums (float64
   accumulators over the per-tile fp32 energies) give the attention matrices
   ``softmax(rowmax(E) - E)`` of the whole image, one per stream (U-Net, visible, infrared).
2. Each tile, cut with a halo of ``halo`` pixels, is encoded again and decoded with those
   attention matrices (``A v`` is per pixel given A); its interior is written into the output.

The network's maths lives only in ``CoCoNet.encode`` / ``attention_energies`` / ``decode``; this
module only cuts, sums and pastes. The reflect padding to a multiple of 16 is done once on the
whole image, as ``CoCoNet.forward`` does; tile origins and crop edges are multiples of 16 of the
padded image, so the three max-pools and the bilinear upsamplings line up with the untiled grid.

Halo. A pixel is computed exactly when its receptive field lies inside the crop. Walking the
network (a 3x3 conv at scale s adds s full-resolution pixels to the radius, a 2x2 max-pool s, a
bilinear x2 upsampling from scale 2s adds 2s; the radius of a concatenation is the larger one)
gives 109 pixels for the output and 58 for the deepest energy (relu3_4 of the VGG, 50, plus the
query/key convolution at H/8, 8). Measured (``tests/test_tiling.py``: input pixels with a
nonzero gradient for one output pixel, the attention matrices held fixed as in pass 2; 99 to 102
over pixel positions modulo 16, below the walk's bound because a max-pool passes one pixel of
four): 102 for the output and 51 beyond its 8x8 cell for the deepest query/key. The halos are
the bounds rounded up to multiples of 16 (crops must start on the 16-pixel grid): ``HALO = 112``,
``ENERGY_HALO = 64``. With a smaller halo the result is an approximation; the influence decays
fast (max |difference| on a 296x200 pair with random weights: 9e-6 at 16 pixels, 6e-7 at 48).

Memory. Peak working memory (beyond the model's weights and the caller's inputs) is about
``BYTES_PER_PIXEL[dtype] * crop pixels + BASE_BYTES`` for one tile plus ``IMAGE_BYTES_PER_PIXEL``
per pixel of the padded image (padded input, output). The constants were fitted to the peak
resident set (VmHWM growth, in a fresh process each) of CPU forward passes at several sizes,
with ``benchmarks/bench_tiling.py --fit``; ``plan_tiles`` uses them to pick the largest tile
that fits a budget. On CUDA they are only an approximation. After every tile the freed heap
goes back to the OS (:func:`release_freed_memory`), so one pass's leftovers do not add to the
next pass's peak (``benchmarks/bench_fuse_memory.py`` checks whole ``coconet fuse`` processes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Iterator

import torch

from models.attention import ChannelAttention
from models.coconet import PAD_MULTIPLE, CoCoNet, check_pair, crop_padding, pad_to_multiple
from models.errors import CoconetError

RECEPTIVE_RADIUS = 109  # full-resolution pixels, output <- input (see the module docstring)
ENERGY_RADIUS = 58  # the deepest attention energy's q/k <- input
HALO = 112  # RECEPTIVE_RADIUS rounded up to a multiple of 16
ENERGY_HALO = 64  # ENERGY_RADIUS rounded up to a multiple of 16
MIN_TILE = PAD_MULTIPLE

# Fitted with ``benchmarks/bench_tiling.py --fit`` (CPU, 2 threads, torch 2.x, oneDNN; peak RSS
# growth of untiled forward passes at 192..576 pixels square): fp32 2070 bytes/pixel + 18 MiB,
# bf16 autocast 1194 bytes/pixel + 25 MiB. Tiled runs cost a little more per crop pixel (the
# benchmark's fp32 runs: 2290 bytes/pixel with 736-pixel crops, 2090 with 1152-pixel crops), so
# the model uses fp32 2400 and bf16 1400 (the same ~16 % over the fit) and a 32 MiB base.
# Refitted once enc1 ran in fp32 at inference too (precision rule, README "Fidelity"): fp32
# 1439 bytes/pixel + 50 MiB, bf16 1329 + 28 MiB; bf16 is now 1550 (~16 % over), fp32 kept.
BYTES_PER_PIXEL = {torch.float32: 2400, torch.bfloat16: 1550}
BASE_BYTES = 32 * 2**20
IMAGE_BYTES_PER_PIXEL = 20  # padded fp32 input (2 channels), the output, 2 output-contrast copies


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Hand memory freed by the last tile back to the OS. glibc keeps freed heap chunks for
    reuse, and a tile's many differently sized buffers leave its arenas fragmented: measured on
    a 4000x3000 pair in bf16, 0.6 GB stayed resident after pass 1 and added to pass 2's peak."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# (top, bottom, left, right) in pixels of the padded image.
Box = tuple[int, int, int, int]


class TileBudgetError(CoconetError, MemoryError, ValueError):
    """Even the smallest tile does not fit the memory budget."""


def _round_up(value: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-int(value) // multiple) * multiple


def _format_bytes(size: float) -> str:
    return f"{size / 2**30:.2f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


def tile_boxes(height: int, width: int, tile: int, halo: int) -> Iterator[tuple[Box, Box]]:
    """(interior, crop) boxes covering a padded ``height`` x ``width`` image.

    Interiors start at multiples of ``tile`` and partition the image; each crop is its interior
    grown by ``halo`` on every side and clipped to the image. All four must be multiples of 16.
    """
    if any(value % PAD_MULTIPLE for value in (height, width, tile, halo)) or tile <= 0:
        raise ValueError(
            f"image {height}x{width}, tile {tile} and halo {halo} must be multiples of "
            f"{PAD_MULTIPLE} (tile > 0): crops must start on the max-pools' grid"
        )
    for top in range(0, height, tile):
        bottom = min(top + tile, height)
        for left in range(0, width, tile):
            right = min(left + tile, width)
            crop = (max(top - halo, 0), min(bottom + halo, height))
            crop += (max(left - halo, 0), min(right + halo, width))
            yield (top, bottom, left, right), crop


def _cut(x: torch.Tensor, crop: Box, device: torch.device) -> torch.Tensor:
    """The crop of the padded image, on the model's device, in the image's memory format."""
    top, bottom, left, right = crop
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x[..., top:bottom, left:right].to(device).contiguous(memory_format=fmt)


def _relative(interior: Box, crop: Box) -> Box:
    top, _, left, _ = crop
    return (interior[0] - top, interior[1] - top, interior[2] - left, interior[3] - left)


def tiled_attentions(
    model: CoCoNet, x: torch.Tensor, tile: int, halo: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 1: the whole padded image's attention matrices (mam8, mam4, mam2), tile by tile,
    each tile computed on ``device`` (the model's)."""
    sums: list[torch.Tensor] = []
    dtypes: list[torch.dtype] = []
    for interior, crop in tile_boxes(*x.shape[-2:], tile, halo):
        features = model.encode(_cut(x, crop, device))
        energies = model.attention_energies(features, _relative(interior, crop))
        del features
        release_freed_memory()
        if not sums:
            dtypes = [energy.dtype for energy in energies]
            sums = [energy.double() for energy in energies]
        else:
            for total, energy in zip(sums, energies, strict=True):
                total += energy
    return tuple(
        ChannelAttention.attention_from_energy(total.to(dtype))
        for total, dtype in zip(sums, dtypes, strict=True)
    )


def tiled_decode(
    model: CoCoNet,
    x: torch.Tensor,
    tile: int,
    halo: int,
    attentions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """Pass 2: the padded image's output, each tile decoded on ``device`` with the whole
    image's attention."""
    out = None
    for interior, crop in tile_boxes(*x.shape[-2:], tile, halo):
        fused = model.decode(model.encode(_cut(x, crop, device)), attentions)
        if out is None:
            out = x.new_empty((x.shape[0], 1, *x.shape[-2:]), dtype=fused.dtype)
        top, bottom, left, right = interior
        rel_top, rel_bottom, rel_left, rel_right = _relative(interior, crop)
        out[..., top:bottom, left:right] = fused[..., rel_top:rel_bottom, rel_left:rel_right]
        del fused
        release_freed_memory()
    return out


def fuse_tiled(
    model: CoCoNet,
    vis: torch.Tensor,
    ir: torch.Tensor,
    tile: int,
    device: torch.device,
    halo: int = HALO,
) -> torch.Tensor:
    """``model(vis, ir)`` computed tile by tile: (B,1,H,W) inputs in [-1, 1] -> (B,1,H,W).

    ``tile`` (interior side) and ``halo`` are rounded up to multiples of 16; a tile covering the
    padded image runs the untiled forward pass. With ``halo >= HALO`` (the default) the result
    equals the untiled one up to floating-point summation order. The model must be in eval mode
    (BatchNorm running statistics); runs under ``torch.inference_mode`` and follows any autocast
    the caller has entered (energies are summed in fp32 or better). The inputs and the output
    stay on the inputs' device; only the tiles move to ``device``, the model's.
    """
    check_pair(vis, ir)
    if model.training:
        raise ValueError("fuse_tiled needs the model in eval mode (call model.eval())")
    if tile < 1 or halo < 0:
        raise ValueError(f"tile must be >= 1 and halo >= 0, got tile={tile}, halo={halo}")
    tile, halo = _round_up(tile), _round_up(halo)
    with torch.inference_mode():
        x, pads = pad_to_multiple(torch.cat([vis, ir], dim=1))
        if tile >= max(x.shape[-2:]):
            return model(vis.to(device), ir.to(device)).to(vis.device)
        attentions = tiled_attentions(model, x, tile, min(halo, ENERGY_HALO), device)
        return crop_padding(tiled_decode(model, x, tile, halo, attentions, device), pads)


def estimate_bytes(
    height: int, width: int, tile: int, dtype: torch.dtype = torch.float32, halo: int = HALO
) -> int:
    """Estimated peak working memory of ``fuse_tiled`` on one ``height`` x ``width`` pair."""
    if dtype not in BYTES_PER_PIXEL:
        known = ", ".join(map(str, BYTES_PER_PIXEL))
        raise ValueError(f"no memory model for {dtype} (use {known})")
    padded_h, padded_w = _round_up(height), _round_up(width)
    tile, halo = _round_up(tile), _round_up(halo)
    if tile >= max(padded_h, padded_w):  # untiled forward pass
        crop_pixels = padded_h * padded_w
    else:
        crop_pixels = min(tile + 2 * halo, padded_h) * min(tile + 2 * halo, padded_w)
    image = IMAGE_BYTES_PER_PIXEL * padded_h * padded_w
    return int(BYTES_PER_PIXEL[dtype] * crop_pixels + BASE_BYTES + image)


def plan_tiles(
    height: int, width: int, max_bytes: int, dtype: torch.dtype = torch.float32, halo: int = HALO
) -> int:
    """The largest tile (a multiple of 16) whose estimated peak memory fits ``max_bytes``.

    A tile as large as the padded image's longer side means "untiled". Raises
    ``TileBudgetError`` (naming the memory needed) when even a 16-pixel tile does not fit.
    """
    whole = _round_up(max(height, width))
    if estimate_bytes(height, width, whole, dtype, halo) <= max_bytes:
        return whole
    for tile in range(whole - PAD_MULTIPLE, MIN_TILE - 1, -PAD_MULTIPLE):
        if estimate_bytes(height, width, tile, dtype, halo) <= max_bytes:
            return tile
    needed = estimate_bytes(height, width, MIN_TILE, dtype, halo)
    raise TileBudgetError(
        f"a {width}x{height} pair needs at least {_format_bytes(needed)} for tiled CoCoNet "
        f"inference ({MIN_TILE}-pixel tiles, {_round_up(halo)}-pixel halo, {dtype}); "
        f"the budget is {_format_bytes(max_bytes)}"
    )


def tile_count(height: int, width: int, tile: int) -> int:
    """How many tiles ``fuse_tiled`` cuts a ``height`` x ``width`` pair into."""
    tile = _round_up(tile)
    return math.ceil(_round_up(height) / tile) * math.ceil(_round_up(width) / tile)
