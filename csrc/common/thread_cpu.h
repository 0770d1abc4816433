// ThreadCpu: the CPU time of one thread (an engine's progress thread), readable from any other
// thread with the resolution of the kernel's per-thread clock (nanoseconds on Linux), not the
// 10 ms ticks of /proc. The thread itself calls attach() when it starts and detach() before it
// ends; seconds() then keeps returning the final value. Elsewhere than POSIX it reads 0.
#pragma once

#include <mutex>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <time.h>
#define DLION_HAVE_THREAD_CPU 1
#endif

namespace dlion {

class ThreadCpu {
 public:
  // attach() now, detach() when the scope ends (also by an exception).
  class Scope {
   public:
    explicit Scope(ThreadCpu& cpu) : cpu_(cpu) { cpu_.attach(); }
    ~Scope() { cpu_.detach(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    ThreadCpu& cpu_;
  };

  // On the thread to be measured.
  void attach() {
    std::lock_guard<std::mutex> lock(mu_);
#ifdef DLION_HAVE_THREAD_CPU
    alive_ = pthread_getcpuclockid(pthread_self(), &clock_) == 0;
#endif
  }

  // On the measured thread, just before it ends: the clock id is invalid afterwards.
  void detach() {
    std::lock_guard<std::mutex> lock(mu_);
    final_ = read_locked();
    alive_ = false;
  }

  // CPU seconds the thread has used (user + system); monotonic.
  double seconds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return read_locked();
  }

 private:
  double read_locked() const {
#ifdef DLION_HAVE_THREAD_CPU
    if (alive_) {
      timespec ts{};
      if (clock_gettime(clock_, &ts) == 0) {
        const double s = static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
        if (s > final_) final_ = s;
      }
    }
#endif
    return final_;
  }

  mutable std::mutex mu_;
  mutable double final_ = 0.0;  // the largest value read so far
  bool alive_ = false;
#ifdef DLION_HAVE_THREAD_CPU
  clockid_t clock_{};
#endif
};

}  // namespace dlion
