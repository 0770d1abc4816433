// The peer engine's heartbeats (liveness.h): sent from its progress thread to every peer every
// Liveness::interval_s(), unpaced (they are not part of any emulated link's traffic), at most
// one in flight per peer (a frozen peer does not pile them up); a final one at shutdown, which
// each peer answers with its own final one.
#include <algorithm>

#include "common/error.h"
#include "engine/mpi_check.h"
#include "engine/peer_engine.h"

namespace dlion {

void PeerEngine::send_heartbeat(int peer, bool final, Clock::time_point now) {
  const auto p = static_cast<std::size_t>(peer);
  if (final_sent_[p]) return;
  Send s;
  s.peer = peer, s.tag = kHeartbeatTag, s.release = now;
  s.msg = std::make_shared<wire::Message>(wire::encode_empty(
      wire::Kind::kHeartbeat, static_cast<std::uint32_t>(rank_), final ? 1u : 0u,
      liveness_->entered()));
  DLION_MPI(MPI_Isend(s.msg->data(), static_cast<int>(s.msg->size()), MPI_BYTE, peer,
                      kHeartbeatTag, comm_, &s.req));
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_[p].control_bytes_sent += s.msg->size();
  }
  in_flight_.push_back(std::move(s));
  beat_in_flight_[p] = 1;
  if (final) final_sent_[p] = 1;
}

void PeerEngine::beat(Clock::time_point now) {
  if (size_ == 1) return;
  if (now >= next_beat_) {
    for (int p = 0; p < size_; ++p)
      if (p != rank_ && !beat_in_flight_[static_cast<std::size_t>(p)])
        send_heartbeat(p, false, now);
    next_beat_ = now + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(liveness_->interval_s()));
  }
  const std::string lost = liveness_->check(now);
  if (!lost.empty()) throw PeerLost(lost);
}

void PeerEngine::on_heartbeat(int peer, const wire::Decoded& d, Clock::time_point now) {
  const bool final = d.header().group == 1;
  liveness_->heartbeat(peer, d.header().step, final, now);
  if (final) send_heartbeat(peer, true, now);  // the answer: nothing more from us either
}

void PeerEngine::say_goodbye(Clock::time_point now) {
  for (int p = 0; p < size_; ++p)
    if (p != rank_) send_heartbeat(p, true, now);
}

Clock::duration PeerEngine::until_beat(Clock::time_point now) const {
  return std::max<Clock::duration>(next_beat_ - now, Clock::duration::zero());
}

bool PeerEngine::said_goodbye() const {
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && !final_sent_[static_cast<std::size_t>(p)]) return false;
  return true;
}

bool PeerEngine::data_in_flight() const {
  return std::any_of(in_flight_.begin(), in_flight_.end(),
                     [](const Send& s) { return s.tag != kHeartbeatTag; });
}

}  // namespace dlion
