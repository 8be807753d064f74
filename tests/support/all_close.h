// Elementwise closeness for every numeric test (kernels, backends): |got - want| <= atol +
// rtol * |want|, NaN never passes; the failure names the worst elements.
#pragma once

#include <span>

#include "gtest/gtest.h"

namespace mamba::testing {

struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

// At most five failing elements are listed, with the count and the largest absolute error.
::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                    double atol, double rtol);
inline ::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                           Tolerance tol) {
  return AllClose(got, want, tol.atol, tol.rtol);
}

}  // namespace mamba::testing
