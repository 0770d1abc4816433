// Every engine knob, with its default, in one struct. csrc/ never reads the environment:
// dlion/config.py derives DLION_<FIELD> variables mechanically and passes the values in.
#pragma once

#include <cstddef>

namespace dlion {

struct EngineConfig {
  // A rank that has not taken part in an operation after this many seconds is named in a
  // warning on stderr (repeated every stall_warning_s).
  double stall_warning_s = 60.0;
  // ... and after this many seconds the operation fails with PeerTimeout on this rank, and the
  // engine refuses further work (its MPI state is no longer known to be consistent).
  double stall_timeout_s = 300.0;
  // Allreduces of at most this many bytes use MPI_Iallreduce; larger ones the pipelined ring.
  std::size_t ring_threshold_bytes = 256 * 1024;
  // Across several sites (Engine::set_sites), large allreduces reduce inside each site, run the
  // ring among one leader per site, and broadcast back inside each site.
  bool hierarchical = true;
  // Segment size of the pipelined ring (bytes); reduction of one segment overlaps the transfer
  // of the next.
  std::size_t ring_segment_bytes = 512 * 1024;
  // Progress-thread backoff while requests are in flight and nothing completes: poll with a
  // yield in between for up to backoff_spin_us (a peer that is about to arrive is served at
  // once), then sleep between polls, doubling from 1 us up to backoff_max_us.
  int backoff_spin_us = 3000;
  int backoff_max_us = 200;
};

}  // namespace dlion
