// The sweep chart: output throughput against latency (TTFT and TPOT, median and the highest
// percentile asked for), one point per sweep value, drawn by gnuplot into a PNG or SVG file.
// gnuplot is optional at run time: without it the caller says so and skips the chart.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/loadgen/report.h"

namespace mamba::client::loadgen {

// The gnuplot executable found on PATH, if any.
std::optional<std::string> FindGnuplot();

// Draws the chart into `path` (.png: pngcairo, else png; anything else: svg). Runs gnuplot for
// at most 60 s.
absl::Status WriteSweepChart(const std::string& gnuplot, const std::string& parameter,
                             const std::vector<SweepPoint>& points, const std::string& path);

}  // namespace mamba::client::loadgen
