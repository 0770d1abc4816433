// The peer engine's progress thread (the only thread that makes MPI calls on its communicator):
// its loop and sleep policy. Where the rest of its code lives: peer_wire.h.
//
// Each turn of the loop: take newly submitted requests and start them (encode and queue every
// link's message), make MPI progress (post the sends whose release time has come, test sends,
// match and receive arriving messages with MPI_Improbe/MPI_Imrecv, validate them, acknowledge
// them), finish the requests whose peers have all sent far enough, warn about or time out the
// ones that wait too long, then sleep:
//   * a request waits: poll again after a yield while a transfer is under way (MPI moves a
//     large message's data only inside our calls) or within 200 us (at most backoff_spin_us)
//     of the last progress, else after sleeps doubling up to backoff_max_us, up
//     to idle_poll_us once nothing happened for 20 ms (a far or slow peer), never past the
//     next paced release;
//   * messages queued, in flight or unacknowledged: until the next paced release, at most
//     backoff_max_us;
//   * links in use but nothing pending: every idle_poll_us for 0.25 s after the last traffic
//     (arriving messages are acknowledged promptly, which keeps link timing honest), then with
//     sleeps growing to 50 ms (an idle engine costs next to nothing);
//   * nothing registered: on the condition variable until work arrives.
// Every sleep is a wait on the condition variable, so a submit wakes the thread at once.
#include <algorithm>
#include <chrono>
#include <thread>

#include "common/error.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"

namespace dlion {

using namespace peer;

namespace {

constexpr int kSpinUs = 200;  // longest yield-spin after progress (backoff_spin_us caps it)

}  // namespace

void PeerEngine::run() {
  auto idle_since = Clock::now();
  int sleeps = 0;
  try {
    for (;;) {
      std::vector<std::unique_ptr<Task>> fresh;
      const bool stop = worker_.take_all(fresh);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (caps_changed_) {
          for (std::size_t p = 0; p < links_.size(); ++p) {
            const int w = caps_[p].wire;  // set_caps() checked it against clocks_
            links_[p].set_cap(caps_[p],
                              w >= 0 ? &clocks_->slot(static_cast<std::size_t>(w)) : nullptr);
          }
          caps_changed_ = false;
        }
      }
      auto now = Clock::now();
      bool progressed = !fresh.empty();
      for (auto& t : fresh) {
        tasks_.push_back(std::move(t));
        start(*tasks_.back(), now);
      }
      progressed |= service(now);
      now = Clock::now();
      beat(now);  // throws PeerLost once a peer has been silent for liveness_timeout_s
      for (std::size_t i = 0; i < tasks_.size();) {
        if (try_finish(*tasks_[i], now)) {
          tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(i));
          progressed = true;
        } else {
          check_stall(*tasks_[i], now);
          ++i;
        }
      }
      if (progressed) {
        idle_since = now;
        sleeps = 0;
        last_traffic_ = now;
      }
      if (stop && tasks_.empty()) {
        drain(now + seconds(std::min(5.0, config_.stall_timeout_s)), true);
        return;
      }

      // Sleep (see the header comment).
      Clock::duration nap{};
      bool forever = false;
      if (!tasks_.empty()) {
        if (progressed) continue;
        // While a transfer is under way, MPI moves its data only inside our calls (large
        // messages go in chunks): poll after a yield, so the wait is not stretched by naps.
        const bool moving = data_in_flight() || !receiving_.empty();
        // Peers' messages come over links with latencies of milliseconds (else the exchange
        // runs as an allreduce): a short spin after progress is enough.
        const auto spin = std::chrono::microseconds(std::min(config_.backoff_spin_us, kSpinUs));
        if (moving || now - idle_since < spin) {
          std::this_thread::yield();
          continue;
        }
        // A wait that has seen nothing for 20 ms is a slow or far peer (a paced wide-area link,
        // a straggler): polling every idle_poll_us then costs little delay and little CPU.
        const bool long_wait = now - idle_since > std::chrono::milliseconds(20);
        const long cap = long_wait ? std::max(config_.backoff_max_us, config_.idle_poll_us)
                                   : config_.backoff_max_us;
        nap = std::chrono::microseconds(std::min<long>(1L << std::min(sleeps++, 20), cap));
        for (const Send& s : to_post_) nap = std::min(nap, s.release - now);
      } else if (!to_post_.empty() || data_in_flight() || !receiving_.empty() || !all_acked()) {
        nap = std::chrono::microseconds(config_.backoff_max_us);
        for (const Send& s : to_post_) nap = std::min(nap, s.release - now);
      } else if (probes_started_ > 0 || any_group()) {
        // Every idle_poll_us for 0.25 s after the last traffic (between the steps of a
        // training loop), then doubling up to 50 ms (an idle engine).
        const auto quiet = now - last_traffic_;
        nap = std::chrono::microseconds(config_.idle_poll_us);
        if (quiet > std::chrono::milliseconds(250))
          nap = std::min<Clock::duration>(quiet - std::chrono::milliseconds(250),
                                          std::chrono::milliseconds(50));
        nap = std::max<Clock::duration>(nap, std::chrono::microseconds(config_.idle_poll_us));
      } else {
        forever = true;
      }
      if (size_ > 1) {  // wake for the next heartbeat
        nap = forever ? until_beat(now) : std::min(nap, until_beat(now));
        forever = false;
      }
      // Woken by a submit, set_caps() or shutdown().
      if (forever)
        worker_.wait();
      else if (nap > Clock::duration::zero())
        worker_.wait_for(nap);
    }
  } catch (...) {
    fail_all(describe_current_exception());
  }
}

}  // namespace dlion
