// Worker<Item>: the thread-owning part that Engine and PeerEngine share (the shape of gloo's
// tcp::Loop and c10d's ProcessGroupMPI enqueue/runLoop/destroy). It owns one named thread
// (its CPU time measured by ThreadCpu), the queue of submitted items with its mutex and
// condition variable, the stopping flag and the first fatal error ("poisoned").
//
// Contract:
//   * Callers push(); a push is refused with EngineShutdown once the worker is poisoned (the
//     text names the first fatal error) or stopping. Each accepted item gets the next sequence
//     number, in queue order, and a Handle; the push wakes the thread.
//   * The thread (the body given to start()) takes items with next() (blocking, in order) or
//     take_all(), and sleeps with wait()/wait_for(); push(), poke() and stop() wake it.
//   * stop() sets stopping, wakes the thread and joins it; the body decides how much of the
//     queue it still runs (both engines run all of it). Idempotent; the destructor calls it.
//   * poison() keeps the first reason and hands every queued item to a callback that fails it
//     (outside the lock), so later pushes and queued items fail alike.
// What an engine checks before a push (its arguments, liveness) and the texts of its refusals
// stay the engine's own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/thread_cpu.h"
#include "engine/comm.h"
#include "engine/handle.h"

namespace dlion {

template <class Item>
class Worker {
 public:
  explicit Worker(const char* thread_name) : thread_name_(thread_name) {}
  ~Worker() { stop(); }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread (once): it is named, measured, and runs body().
  template <class Body>
  void start(Body body) {
    thread_ = std::thread([this, body = std::move(body)]() mutable {
      name_this_thread(thread_name_);
      ThreadCpu::Scope measured(thread_cpu_);
      body();
    });
  }

  // Queues make(handle) under a new Handle(seq, name) and wakes the thread. Refused with
  // EngineShutdown(refuse(&reason)) once poisoned, EngineShutdown(refuse(nullptr)) once
  // stopping; refuse is only called then.
  template <class Refuse, class Make>
  HandlePtr push(const std::string& name, Refuse&& refuse, Make&& make) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!poisoned_.empty()) throw EngineShutdown(refuse(&poisoned_));
    if (stopping_) throw EngineShutdown(refuse(nullptr));
    auto handle = std::make_shared<Handle>(next_seq_++, name);
    queue_.push_back(make(handle));
    cv_.notify_one();
    return handle;
  }

  // The thread: waits for the oldest item and moves it to out; false once stopping with
  // nothing queued.
  bool next(Item& out) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }

  // The thread: appends every queued item to out, without waiting, and clears a poke.
  // Returns whether stop() was called.
  bool take_all(std::vector<Item>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    while (!queue_.empty()) {
      out.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    poked_ = false;
    return stopping_;
  }

  // The thread: sleeps until a push, poke or stop (one since the last take_all counts).
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return woken(); });
  }
  // As wait(), for at most d. False when d passed with nothing to wake for.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, d, [this] { return woken(); });
  }

  // Wakes the thread from wait()/wait_for() (something other than the queue changed).
  void poke() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      poked_ = true;
    }
    cv_.notify_one();
  }

  // Refuses later pushes, wakes the thread and joins it. False when it had already stopped.
  bool stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && !thread_.joinable()) return false;
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return true;
  }

  // Keeps the first reason, takes every queued item and calls fail(item) on each (outside the
  // lock). Returns how many it failed.
  template <class Fail>
  std::size_t poison(const std::string& why, Fail&& fail) {
    std::deque<Item> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (poisoned_.empty()) poisoned_ = why;
      dropped.swap(queue_);
    }
    for (Item& item : dropped) fail(item);
    return dropped.size();
  }

  // Empty while healthy; the first fatal error's message once poisoned.
  std::string poisoned() const {
    std::lock_guard<std::mutex> lock(mu_);
    return poisoned_;
  }
  // CPU seconds used so far by the thread.
  double cpu_seconds() const { return thread_cpu_.seconds(); }

 private:
  bool woken() const { return stopping_ || !queue_.empty() || poked_; }

  const char* thread_name_;
  mutable std::mutex mu_;  // guards the fields below up to thread_cpu_
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  bool poked_ = false;
  std::string poisoned_;
  std::uint64_t next_seq_ = 0;
  ThreadCpu thread_cpu_;
  std::thread thread_;
};

}  // namespace dlion
