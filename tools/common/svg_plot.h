// A small SVG line chart (no dependencies): one polyline with markers per
// series, axes with ticks, a legend, and optional horizontal reference lines.
#pragma once

#include <string>
#include <vector>

namespace spruce::cli {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;
};

struct PlotReference {
  std::string label;
  double y = 0;
};

struct Plot {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  std::vector<PlotReference> references;
  /// Renders the chart as a standalone SVG document.
  std::string to_svg(int width = 760, int height = 480) const;
};

}  // namespace spruce::cli
