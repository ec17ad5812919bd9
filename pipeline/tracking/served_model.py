"""The served CoCoNet: what ``mlflow models serve`` (and ``pyfunc.load_model``) calls to fuse a
request, and the request's schema.

A request is a DataFrame with string columns ``vis`` and ``ir``, one row per pair: base64 image
file bytes (PNG, BMP, JPEG or TIFF; 8 or 16 bit; a colour visible image gives a colour result,
fused in YCbCr), decoded by the rules of :mod:`pipeline.core.decoding` (size limit checked from
the header, non-finite pixels refused). Nested lists of floats on 0..1 (HxW, or HxWx3) are
accepted too, and then ``fused`` comes back as nested lists. The answer has one string column
``fused``: the fused image as base64 8-bit PNG.

A bad request is the caller's fault: it gets HTTP 400 with the project's one-line reason as
``message`` (:class:`RequestError`), never a stack trace or a server path; anything else is a
500 naming only the error's type. The columns are declared optional in the signature so that a
missing one reaches :meth:`FusionModel.predict` and gets that one-line answer too.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema
from PIL import Image

from models.coconet import CoCoNet
from pipeline.core.decoding import DEFAULT_MAX_PIXELS, ImageError, check_size, decode_image
from pipeline.core.errors import CoconetError
from pipeline.core.heap import thread_heap_hint
from pipeline.core.imageio import to_uint8
from pipeline.core.placement import Placement
from pipeline.fusion import fuse_arrays

log = logging.getLogger(__name__)
COLUMNS = ("vis", "ir")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", role, required=False) for role in COLUMNS]),
    outputs=Schema([ColSpec("string", "fused")]),
)


class RequestError(MlflowException):
    """A request MLflow answers with HTTP 400 and exactly this one-line message.

    MLflow's scoring server prefixes an exception's message with the request's data; the
    reason given here is kept as the message, so a client reads it as it was written.
    """

    def __init__(self, reason: str) -> None:
        self._reason = " ".join(reason.split())
        super().__init__(self._reason, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:  # the server's rewrite is not kept
        pass


def png_base64(image: np.ndarray) -> str:
    """A 0..1 float (or uint8) image as base64 8-bit PNG bytes."""
    array = image if image.dtype == np.uint8 else to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def input_example() -> pd.DataFrame:
    """A tiny request (a 32x32 pair) for the model's signature and ``serving_input_example``."""
    y, x = np.mgrid[:32, :32]
    vis = (0.5 + 0.4 * np.sin(x / 3.0) * np.cos(y / 5.0)).astype(np.float32)
    ir = np.where((x - 16) ** 2 + (y - 16) ** 2 < 40, 0.9, 0.2).astype(np.float32)
    return pd.DataFrame([{"vis": png_base64(vis), "ir": png_base64(ir)}])


def decode_value(value: Any, role: str, max_pixels: int) -> tuple[np.ndarray, bool]:
    """(0..1 float image, whether it came as base64 file bytes) from one request value."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise ImageError(f"request lacks {role} (give vis and ir, one pair per row)")
    if isinstance(value, bytes | str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{role}: not base64 image bytes ({exc})") from exc
        return decode_image(raw, role, max_pixels), True
    if not isinstance(value, list | np.ndarray):
        raise ImageError(
            f"{role}: expected base64 image bytes (a string) or nested lists of floats, "
            f"got {type(value).__name__}"
        )
    return _array(value, role, max_pixels), False


def _array(value: list | np.ndarray, role: str, max_pixels: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{role}: not an image (base64 bytes or nested lists)") from exc
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(f"{role}: expected HxW or HxWx3 values, got shape {array.shape}")
    check_size(array.shape[1], array.shape[0], max_pixels, role)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ImageError(f"{role}: values must be finite and within 0..1")
    return array


class FusionModel:
    """What the loader returns: :meth:`predict` fuses the request's pairs."""

    def __init__(
        self, model: CoCoNet, placement: Placement, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self.model = model.eval()
        self.placement = placement
        self.max_pixels = max_pixels
        self._heap_checked = False

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """A DataFrame with columns ``vis`` and ``ir`` (one row per pair) -> DataFrame with
        ``fused``; a dict ``{"vis": ..., "ir": ...}`` (one pair) -> ``{"fused": ...}``.

        Raises :class:`RequestError` (HTTP 400) for a bad request and an MLflow internal
        error (HTTP 500, the type of error only) for anything else.
        """
        self._check_thread_heap()
        try:
            if isinstance(model_input, dict):
                return {"fused": self._fuse_one(model_input)}
            if not isinstance(model_input, pd.DataFrame):
                raise ImageError(f"expected a table of pairs, got {type(model_input).__name__}")
            fused = [self._fuse_one(row) for row in model_input.to_dict("records")]
            return pd.DataFrame({"fused": fused})
        except CoconetError as exc:
            raise RequestError(str(exc)) from None
        except MemoryError:
            raise RequestError("the pair does not fit in this server's memory") from None
        except Exception as exc:
            message = f"fusion failed ({type(exc).__name__}); see the server log"
            raise MlflowException(message, error_code=INTERNAL_ERROR) from exc

    def _check_thread_heap(self) -> None:
        """Warn once when fusing on a worker thread (as MLflow's scoring server does) without
        one heap for all threads: such requests run 1.2-1.3x slower (:mod:`pipeline.core.heap`).
        Fusing on the main thread (``pyfunc.load_model`` in a script, MLflow checking the input
        example while logging) needs no warning."""
        if self._heap_checked or threading.current_thread() is threading.main_thread():
            return
        self._heap_checked = True
        if hint := thread_heap_hint():
            log.warning(hint)

    def _fuse_one(self, pair: dict[str, Any]) -> str | list:
        missing = [role for role in COLUMNS if role not in pair]
        if missing:
            raise ImageError(f"request lacks {', '.join(missing)} (give vis and ir)")
        vis, vis_bytes = decode_value(pair["vis"], "vis", self.max_pixels)
        ir, _ = decode_value(pair["ir"], "ir", self.max_pixels)
        if vis.shape[:2] != ir.shape[:2]:
            raise ImageError(
                f"vis is {vis.shape[1]}x{vis.shape[0]} but ir is {ir.shape[1]}x{ir.shape[0]}; "
                "a pair must have one size"
            )
        fused = fuse_arrays(self.model, vis, ir, self.placement)
        return png_base64(fused) if vis_bytes else fused.tolist()
