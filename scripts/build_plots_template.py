"""Write ``.dvc/plots/offline.html``: the page ``dvc plots show`` fills, with Vega, Vega-Lite and
vega-embed inlined (from the ``vl-convert-python`` package) instead of loaded from a CDN, so the
plots draw without network. Regenerate after a Vega upgrade:

    uv run --with vl-convert-python==1.9.0.post1 python scripts/build_plots_template.py
"""

from __future__ import annotations

from pathlib import Path

import vl_convert

VEGA_LITE = "v5.21"
TARGET = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>coconet: DVC plots</title>
<!-- Vega, Vega-Lite __VL__ and vega-embed, inlined by scripts/build_plots_template.py
     from vl-convert-python __VLC__ (BSD-3-Clause): no network needed. -->
<script type="text/javascript">
__BUNDLE__
</script>
<style>
body { font-family: sans-serif; margin: 16px; }
table { border-spacing: 15px; }
img { max-width: 100%; }
</style>
</head>
<body>
<h1>coconet: training losses, evaluation gallery, masks preview</h1>
{plot_divs}
</body>
</html>
"""


def main() -> None:
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    if "{plot_divs}" in bundle or "</script>" in bundle:
        raise SystemExit("the bundle holds text DVC or the page would misread")
    page = PAGE.replace("__BUNDLE__", bundle).replace("__VL__", VEGA_LITE)
    page = page.replace("__VLC__", getattr(vl_convert, "__version__", "?"))
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(page)
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
