// Internal to the peer engine's .cc files: the channels (MPI tags) its messages travel on, the
// probe's groups and rounds, and small helpers they share; not part of the engine's interface.
//
// Channels: heartbeats on PeerEngine::kHeartbeatTag (996), probes on kProbeTag, acknowledgements
// on kAckTag, tensor group g's gradients on kGroupTag + g (so a group's messages are only
// received once this rank has registered the group).
//
// Where the peer engine's code lives (peer_engine.h declares it all):
//   peer_engine.cc     construction, the caller-facing checks and queries
//   peer_progress.cc   the progress loop and its sleep policy
//   peer_start.cc      starting requests: tensor groups, encoding every link's message, probes
//   peer_mpi.cc        MPI progress: queue on a link, post, test, match and receive; buffers
//   peer_receive.cc    validating and routing an arrived message
//   peer_finish.cc     finishing a request: the weighted aggregate
//   peer_stall.cc      what a request waits for: stall warnings, timeouts, departed peers
//   peer_drain.cc      draining the links at shutdown, failing every request after an error
//   peer_heartbeat.cc  liveness (liveness.h)
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>

#include "engine/link.h"
#include "wire/encode.h"
#include "wire/format.h"

namespace dlion::peer {

constexpr int kProbeTag = 997;
constexpr int kAckTag = 998;
constexpr int kGroupTag = 1000;
constexpr std::uint32_t kProbeGroup = 0xFFFF0000u;  // + round: probe groups never clash
constexpr int kProbeRounds = 3;  // 0: rendezvous (untimed), 1: latency, 2: bandwidth

inline Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The group field of a message that is at least a header long (validate() checks it again).
inline std::uint32_t raw_group(const wire::Message& m) {
  std::uint32_t g = 0;
  if (m.size() >= wire::kHeaderBytes) std::memcpy(&g, m.data() + 12, sizeof g);
  return g;
}

}  // namespace dlion::peer
