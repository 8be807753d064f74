// Summary statistics of a sample, computed as numpy does them so that numbers compare with
// vLLM's benchmark_serving: mean, median, population std (ddof 0), min, max, and percentiles by
// linear interpolation between closest ranks (numpy.percentile's default).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mamba::client::loadgen {

struct Distribution {
  size_t count = 0;
  double mean = 0, median = 0, std = 0, min = 0, max = 0;
  std::vector<std::pair<double, double>> percentiles;  // (p, value)
};

// An empty sample gives zeros (as vLLM reports them).
Distribution Summarize(std::vector<double> values, const std::vector<double>& percentiles);

// p in [0, 100] of an ascending sample (not empty).
double Percentile(const std::vector<double>& sorted, double p);

// vLLM's key fragment for a percentile: 99 -> "99", 99.9 -> "99.9".
std::string PercentileKey(double p);

}  // namespace mamba::client::loadgen
