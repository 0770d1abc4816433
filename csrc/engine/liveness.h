// Liveness: is every other rank's process there? Told apart from progress (is it keeping up?).
//
// The peer engine's progress thread sends every peer a small heartbeat (wire Kind::kHeartbeat)
// every interval_s() and records every heartbeat and message it receives here. Heartbeats do not
// depend on the training thread: a rank that computes slowly, or waits in Python, keeps sending
// them; a rank whose process died, was frozen (SIGSTOP) or was cut off stops. A peer not heard
// from for timeout_s is declared lost: lost() then names it (rank and site) and both engines
// fail what waits and refuse new work with PeerLost.
//
// Each heartbeat carries the sender's collective progress (how many collective operations its
// engine has started), so a stalled collective's warning names the ranks that have not reached
// it and where they are. A rank that shuts down sends a final heartbeat (and every rank answers
// one with its own final heartbeat, so that no heartbeat is left in flight on a communicator
// that is freed); a rank that left is no longer expected to beat, and a collective it will
// never reach fails at once, naming it, instead of stalling.
//
// Thread-safe: the peer engine's thread writes, both engines' threads read.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace dlion {

class Liveness {
 public:
  using Clock = std::chrono::steady_clock;

  // timeout_s > 0; a huge value (or infinity) turns detection off in practice.
  Liveness(int rank, int size, double timeout_s);

  int rank() const { return rank_; }
  int size() const { return size_; }
  double timeout_s() const { return timeout_s_; }
  // How often heartbeats go out: an eighth of the timeout, within [20 ms, 1 s].
  double interval_s() const;

  // The site name of every rank (for messages); the same list on every rank.
  void set_sites(std::vector<std::string> names);
  // "rank 2 (site B)", or "rank 2" before set_sites.
  std::string who(int rank) const;

  // This rank's collective engine started its n-th operation (ops = n + 1 started so far).
  void entered(std::uint64_t ops);
  std::uint64_t entered() const;

  // Called by the peer engine's thread for every message from `peer` (any kind).
  void heard(int peer, Clock::time_point now);
  // ... and for a heartbeat, which carries the peer's collective progress.
  void heartbeat(int peer, std::uint64_t ops, bool final, Clock::time_point now);

  // Declares peers lost that have been silent for timeout_s (sticky); returns lost().
  std::string check(Clock::time_point now);
  // Empty while no peer is lost; else the message naming the lost peer(s).
  std::string lost() const;
  bool left(int peer) const;  // it sent its final heartbeat
  bool all_left() const;      // every peer did

  // For stall warnings of a collective that is this rank's operation number `seq` (0-based):
  // the ranks that have not started it, with where they are and when they were last heard
  // from; empty when every rank has (or nothing is known yet).
  std::string behind(std::uint64_t seq, Clock::time_point now) const;
  // Non-empty when a rank that shut down never started operation `seq` (it never will).
  std::string departed_before(std::uint64_t seq) const;

 private:
  struct Peer {
    Clock::time_point last_heard;
    std::uint64_t ops = 0;
    bool beat = false;  // some heartbeat arrived (ops is known)
    bool left = false;
    bool lost = false;
  };

  const int rank_, size_;
  const double timeout_s_;
  mutable std::mutex mu_;
  std::vector<Peer> peers_;
  std::vector<std::string> sites_;
  std::uint64_t entered_ = 0;
  std::string lost_;
};

}  // namespace dlion
