// Minimal checking for the C++ tests: a failed CHECK prints where and why and exits non-zero.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/error.h"

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

// The message of the dlion::InvalidArgument that f() throws, or "" when it throws none.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const dlion::InvalidArgument& e) {
    return e.what();
  }
  return "";
}
