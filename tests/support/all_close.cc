#include "tests/support/all_close.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace mamba::testing {

::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                    double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  size_t bad = 0;
  std::ostringstream msg;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(err <= tol)) {  // NaN fails
      if (bad < 5) msg << " [" << i << "] got " << got[i] << " want " << want[i] << ";";
      ++bad;
    }
    if (std::isfinite(err)) worst = std::max(worst, err);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " values out of tolerance (max abs err " << worst
         << "):" << msg.str();
}

}  // namespace mamba::testing
