"""The fusion metrics (numpy only): EN, SD, SF, AG, MI, SCD, CC, VIF, Qabf, Nabf, SSIM, PSNR.

Definitions and the two conventions are in ``METRICS.md`` beside this file.
"""

from pipeline.metrics.compute import *  # noqa: F403
from pipeline.metrics.compute import __all__  # noqa: F401
