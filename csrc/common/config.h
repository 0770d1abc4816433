// Every engine knob, with its default, in one struct. csrc/ never reads the environment:
// dlion/config.py derives DLION_<FIELD> variables mechanically and passes the values in.
#pragma once

#include <cstddef>

#include "common/error.h"

namespace dlion {

struct EngineConfig {
  // A rank that has not taken part in an operation after this many seconds is named in a
  // warning on stderr (repeated every stall_warning_s).
  double stall_warning_s = 60.0;
  // ... and after this many seconds the operation fails with PeerTimeout on this rank, and the
  // engine refuses further work (its MPI state is no longer known to be consistent).
  double stall_timeout_s = 300.0;
  // A rank from which no heartbeat arrived for this many seconds is lost: its process died, was
  // frozen or is cut off. Heartbeats come from the peer engine's progress thread (liveness.h),
  // not from the training, so a slow rank is never lost; it only draws stall warnings.
  double liveness_timeout_s = 20.0;
  // Allreduces of at most this many bytes use MPI_Iallreduce; larger ones the pipelined ring.
  std::size_t ring_threshold_bytes = 256 * 1024;
  // Across several sites (Engine::set_sites), large allreduces reduce inside each site, run the
  // ring among one leader per site, and broadcast back inside each site.
  bool hierarchical = true;
  // Segment size of the pipelined ring (bytes); reduction of one segment overlaps the transfer
  // of the next.
  std::size_t ring_segment_bytes = 512 * 1024;
  // Progress-thread backoff while requests are in flight and nothing completes: poll with a
  // yield in between for up to backoff_spin_us after progress (the collective engine at most
  // 50 us, the peer engine 200 us; both longer while a transfer is moving), then sleep between
  // polls, doubling up to backoff_max_us, and up to max(backoff_max_us, idle_poll_us) once
  // the wait is long (engine/backoff.h, peer_progress.cc).
  int backoff_spin_us = 200;
  int backoff_max_us = 200;
  // Peer exchange: bytes of the bandwidth probe sent on every link by probe() (dlion.init
  // runs it); 0 measures latency only.
  std::size_t probe_bytes = 256 * 1024;
  // Peer exchange: while links are in use but no exchange waits, the progress thread looks for
  // arriving messages (to acknowledge them at once, which times the links) every idle_poll_us;
  // from 0.25 s after the last traffic on, it slows down to every 50 ms.
  int idle_poll_us = 1000;
};

// InvalidArgument naming the first knob out of range.
inline void check_config(const EngineConfig& c) {
  DLION_CHECK(c.stall_warning_s > 0 && c.stall_timeout_s > 0, InvalidArgument,
              "stall_warning_s and stall_timeout_s must be > 0 seconds (got ",
              c.stall_warning_s, " and ", c.stall_timeout_s, ")");
  DLION_CHECK(c.liveness_timeout_s > 0, InvalidArgument,
              "liveness_timeout_s must be > 0 seconds (got ", c.liveness_timeout_s, ")");
  DLION_CHECK(c.ring_segment_bytes >= 1024, InvalidArgument,
              "ring_segment_bytes must be at least 1024 (got ", c.ring_segment_bytes, ")");
  DLION_CHECK(c.backoff_spin_us >= 0 && c.backoff_max_us >= 1, InvalidArgument,
              "backoff_spin_us must be >= 0 and backoff_max_us >= 1 (got ", c.backoff_spin_us,
              " and ", c.backoff_max_us, ")");
  DLION_CHECK(c.probe_bytes <= (std::size_t{1} << 30) && c.probe_bytes % 4 == 0,
              InvalidArgument, "probe_bytes must be a multiple of 4 up to 1 GiB (got ",
              c.probe_bytes, ")");
  DLION_CHECK(c.idle_poll_us >= 1, InvalidArgument, "idle_poll_us must be >= 1 (got ",
              c.idle_poll_us, ")");
}

}  // namespace dlion
