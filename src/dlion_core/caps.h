// Emulated link caps from Python: one (bandwidth bytes/s, latency s[, wire]) tuple per rank,
// for PeerEngine.set_caps and Engine.set_caps (csrc/engine/link.h).
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "common/error.h"
#include "engine/link.h"

namespace dlion_py {

inline std::vector<dlion::LinkCap> caps_of(const std::vector<pybind11::tuple>& caps) {
  std::vector<dlion::LinkCap> out;
  out.reserve(caps.size());
  for (const auto& t : caps) {
    DLION_CHECK(t.size() == 2 || t.size() == 3, dlion::InvalidArgument,
                "an emulated cap is (bandwidth, latency[, wire]), got ", t.size(), " fields");
    out.push_back(
        {t[0].cast<double>(), t[1].cast<double>(), t.size() == 3 ? t[2].cast<int>() : -1});
  }
  return out;
}

}  // namespace dlion_py
