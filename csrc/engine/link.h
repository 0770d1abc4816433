// One peer link of the peer engine, seen from the sender: the pacing clock of its emulated cap,
// the messages sent and not yet acknowledged, and the estimators of its bandwidth and latency.
// (The collective engine's rings use its pacing only: set_cap and schedule.)
//
// Timing: the receiver acknowledges every message as soon as it has it (wire Kind::kAck). For a
// message of B bytes that started on the wire at t0 and was acknowledged at t1, T = t1 - t0 is
// one latency out, the transfer, and one latency back. Small messages (<= kLatencyBytes) give a
// latency sample T / 2; large ones (>= kBandwidthBytes) a bandwidth sample B / (T - 2 latency),
// or B / (T / 2) for a link's first when T is less than two latency estimates (noise).
// Both feed exponential moving averages (weight kEwma for the newest sample).
//
// Emulation: with a cap (bandwidth, latency), a message of B bytes queued at t starts on the
// emulated wire when the previous one has left it, occupies it B / bandwidth, and is handed to
// MPI one latency after its last byte left: so the real message arrives when the emulated link
// would have delivered it. The wire is the link's own (a rank pair's cap), or a clock shared
// with every other link that crosses the same emulated site pair, in this process and in the
// other processes of the host (site_clocks.h): then messages of all those links take turns on
// it, whole messages in the order they were queued (first come, first served), and each
// link's timing counts from the end of its own previous message, so the time others' messages
// hold the wire reads as a lower bandwidth, as a real shared link's would. Acknowledgements
// (a header, 64 bytes) only take the latency (control()): they neither wait for the wire nor
// hold it, so that timing a link measures its data, not a queue of other links' data that its
// acknowledgements would otherwise wait behind.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>

#include "engine/site_clocks.h"

namespace dlion {

using Clock = std::chrono::steady_clock;

// What Python sees of one link. Bytes count whole wire messages, headers included; bytes_* and
// messages_* count gradient messages, control_bytes_sent the probes and acknowledgements. Sent
// bytes are counted when a message is queued on the link (pacing may hold it a while).
struct LinkStats {
  std::uint64_t bytes_sent = 0, messages_sent = 0;
  std::uint64_t bytes_received = 0, messages_received = 0;
  std::uint64_t control_bytes_sent = 0;
  double bandwidth_Bps = 0.0;  // EWMA of measured transfers; 0 until one was measured
  double latency_s = 0.0;      // EWMA of the one-way latency; 0 until one was measured
  std::uint64_t bandwidth_samples = 0, latency_samples = 0;
  double timed_bytes = 0.0, timed_seconds = 0.0;  // sums over bandwidth samples
  std::uint64_t last_k = 0;                // entries carried by the last gradient sent
  std::int64_t last_step_received = -1;    // newest gradient step received (any group)
  std::int64_t staleness_last = 0, staleness_max = 0;  // applied-at step - sent-at step
  double emulated_bandwidth_Bps = 0.0, emulated_latency_s = 0.0;  // 0: not emulated
  bool emulated_shared = false;  // the cap is a site pair's wire, shared with other links
};

// An emulated cap; bandwidth 0 means unlimited. wire: the shared clock (a slot of the
// engine's SiteClocks) the link is paced on, or -1 for a clock of its own.
struct LinkCap {
  double bandwidth_Bps = 0.0;
  double latency_s = 0.0;
  int wire = -1;
};

class Link {
 public:
  static constexpr std::size_t kLatencyBytes = 4096;
  static constexpr std::size_t kBandwidthBytes = 16384;
  static constexpr double kEwma = 0.3;

  struct Slot {
    // When this link starts sending the message: once its own previous messages have left
    // the (emulated) wire. On a shared wire the message may wait there for other links' ones.
    Clock::time_point start;
    Clock::time_point release;  // when to hand it to MPI
  };

  // `wire`: the shared clock to pace on (it must outlive the link's use of it); null: the
  // link's own.
  void set_cap(LinkCap cap, SiteClocks::Stamp* wire = nullptr) {
    cap_ = cap;
    wire_ = wire;
  }
  const LinkCap& cap() const { return cap_; }

  // Reserves the emulated wire for a message of `bytes` queued at `now` (thread-safe with
  // respect to the other users of a shared wire: one compare-and-swap loop).
  Slot schedule(std::size_t bytes, Clock::time_point now);
  // A control message (an acknowledgement) queued at `now`: released one latency later.
  Slot control(Clock::time_point now) const;

  // Remembers a sent message until its acknowledgement; timed = false for one whose timing
  // would mislead (e.g. the first probe, which also waits for the peer to start).
  void sent(std::uint32_t group, std::uint64_t step, std::size_t bytes, Clock::time_point start,
            bool timed);
  // Takes the acknowledgement of (group, step); updates stats' estimators. False when no such
  // message is outstanding (the caller treats it as a protocol error).
  bool acked(std::uint32_t group, std::uint64_t step, Clock::time_point now, LinkStats& stats);
  // True while some message sent with this group is unacknowledged.
  bool awaiting(std::uint32_t group) const;
  std::size_t unacked() const { return unacked_.size(); }

 private:
  struct Unacked {
    std::uint32_t group;
    std::uint64_t step;
    std::size_t bytes;
    Clock::time_point start;
    bool timed;
  };
  LinkCap cap_;
  SiteClocks::Stamp* wire_ = nullptr;  // shared wire, or null
  Clock::time_point free_at_{};        // when this link's last message leaves the wire
  std::deque<Unacked> unacked_;
};

}  // namespace dlion
