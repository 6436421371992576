// Line charts, scatter and parallel coordinates drawn as SVG (filled in by the charts work).
