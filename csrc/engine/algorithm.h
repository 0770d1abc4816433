// Algorithm: one non-blocking state machine driven by the progress thread (negotiation, a ring
// allreduce, a wrapped MPI non-blocking collective). Contract:
//   * the constructor posts the first requests and never blocks;
//   * poll() never blocks for long: it tests its requests, does the work they unlock, posts the
//     next ones, sets `progressed` when anything completed, and returns true once finished;
//   * waiting_on() says, for stall warnings, what it still waits for and from whom;
//   * abandon() cancels what can be cancelled and returns true when MPI may still write into the
//     caller's buffer afterwards (the binding then keeps that buffer alive for good);
//   * moving() is true while a transfer is known to be under way (the peers are in the
//     operation and more data is due), so the progress thread polls without sleeping
//     (backoff.h); release() is when the next send held back by an emulated link is due.
#pragma once

#include <chrono>
#include <string>

namespace dlion {

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual bool poll(bool& progressed) = 0;
  virtual std::string waiting_on() const = 0;
  virtual bool abandon() = 0;
  virtual bool moving() const { return false; }
  virtual std::chrono::steady_clock::time_point release() const {
    return std::chrono::steady_clock::time_point::max();
  }
};

}  // namespace dlion
