// Handle: the caller's view of one submitted operation (the shape of c10d's Work).
// The progress thread completes or fails it; any thread may wait on it with a timeout.
// Errors cross threads as values: the progress thread stores an exception_ptr and wait()
// rethrows it on the caller's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dlion {

class Handle {
 public:
  Handle(std::uint64_t seq, std::string name) : seq_(seq), name_(std::move(name)) {}

  std::uint64_t seq() const { return seq_; }
  const std::string& name() const { return name_; }

  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_ != State::Pending;
  }

  // True while the engine may still read or write the caller's buffer. False once the
  // operation completed, or failed before any transfer touching the buffer was posted.
  bool buffer_in_use() const {
    std::lock_guard<std::mutex> lock(mu_);
    return buffer_in_use_;
  }

  // Waits up to timeout_s seconds (negative: no limit). Returns false on timeout; rethrows the
  // stored error if the operation failed; returns true once it completed.
  bool wait(double timeout_s) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [this] { return state_ != State::Pending; };
    if (timeout_s < 0) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), ready)) {
      return false;
    }
    if (state_ == State::Failed) std::rethrow_exception(error_);
    return true;
  }

  // Output of operations that produce data the caller did not allocate (allgather of bytes).
  std::vector<std::uint8_t>& output() { return output_; }
  std::vector<std::uint64_t>& output_counts() { return output_counts_; }

  // Called by the progress thread only.
  void complete() { finish(State::Done, nullptr, false); }
  void fail(std::exception_ptr error, bool buffer_in_use) {
    finish(State::Failed, std::move(error), buffer_in_use);
  }

 private:
  enum class State { Pending, Done, Failed };

  void finish(State state, std::exception_ptr error, bool buffer_in_use) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state_ != State::Pending) return;
      state_ = state;
      error_ = std::move(error);
      buffer_in_use_ = buffer_in_use;
    }
    cv_.notify_all();
  }

  const std::uint64_t seq_;
  const std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::Pending;
  std::exception_ptr error_;
  bool buffer_in_use_ = true;
  std::vector<std::uint8_t> output_;
  std::vector<std::uint64_t> output_counts_;
};

using HandlePtr = std::shared_ptr<Handle>;

}  // namespace dlion
