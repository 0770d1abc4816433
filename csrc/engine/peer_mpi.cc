// The peer engine's MPI progress: queueing a message on its link (paced when the link is
// emulated, link.h), posting the sends whose release time has come, testing sends, matching
// arriving messages with MPI_Improbe/MPI_Imrecv on the channels in use and completing their
// receives (peer_receive.cc takes them from there), and the pool of message buffers.
#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "common/error.h"
#include "engine/mpi_check.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"

namespace dlion {

using namespace peer;

void PeerEngine::enqueue(int peer, int tag, std::shared_ptr<wire::Message> msg,
                         std::uint32_t group, std::uint64_t step, bool timed,
                         Clock::time_point now) {
  Link& link = links_[static_cast<std::size_t>(peer)];
  const Link::Slot slot = tag == kAckTag ? link.control(now) : link.schedule(msg->size(), now);
  if (tag != kAckTag) link.sent(group, step, msg->size(), slot.start, timed);
  Send s;
  s.peer = peer, s.tag = tag, s.msg = std::move(msg), s.release = slot.release;
  s.gradient = tag >= kGroupTag;
  {
    // Counted when queued on the link, so a step's messages count in that step even while
    // pacing still holds them.
    std::lock_guard<std::mutex> lock(mu_);
    LinkStats& st = stats_[static_cast<std::size_t>(peer)];
    if (s.gradient) {
      st.bytes_sent += s.msg->size();
      ++st.messages_sent;
    } else {
      st.control_bytes_sent += s.msg->size();
    }
  }
  to_post_.push_back(std::move(s));
}

bool PeerEngine::all_acked() const {
  return std::all_of(links_.begin(), links_.end(),
                     [](const Link& l) { return l.unacked() == 0; });
}

bool PeerEngine::any_group() const {
  std::lock_guard<std::mutex> lock(groups_mu_);  // set_residual() may add one meanwhile
  return !groups_.empty();
}

namespace {
constexpr std::size_t kSmall = 64 * 1024;  // messages below this size are not pooled
}  // namespace

wire::Message PeerEngine::take(std::size_t len) {
  // A small message (an acknowledgement, a heartbeat) gets fresh storage: handing it a pooled
  // large buffer would lose that buffer (control messages are not given back) and make the
  // next large message fault in fresh pages. Else the smallest pooled storage that fits, else
  // the largest one (it grows once), else fresh.
  if (len < kSmall) return wire::Message(len);
  auto best = pool_.end();
  for (auto it = pool_.begin(); it != pool_.end(); ++it) {
    if (best == pool_.end()) {
      best = it;
    } else if (it->capacity() >= len) {
      if (best->capacity() < len || it->capacity() < best->capacity()) best = it;
    } else if (best->capacity() < len && it->capacity() > best->capacity()) {
      best = it;
    }
  }
  wire::Message m;
  if (best != pool_.end()) {
    m = std::move(*best);
    pool_.erase(best);
  }
  m.reset(len);
  return m;
}

void PeerEngine::give(wire::Message&& msg) {
  // Keep what one step needs (a message out and one in per link, of every group in flight:
  // about 2 per peer) and only buffers worth keeping; the rest goes back to the allocator.
  const std::size_t keep = 2 * static_cast<std::size_t>(size_) + 2;
  if (msg.capacity() < kSmall) return;
  if (pool_.size() >= keep) {
    auto smallest = std::min_element(pool_.begin(), pool_.end(), [](const auto& a, const auto& b) {
      return a.capacity() < b.capacity();
    });
    if (smallest->capacity() >= msg.capacity()) return;
    *smallest = std::move(msg);
    return;
  }
  pool_.push_back(std::move(msg));
}

bool PeerEngine::service(Clock::time_point now) {
  bool progressed = false;
  post_due_sends(now, progressed);
  test_sends(progressed);
  match_incoming(progressed);
  test_receives(now, progressed);
  return progressed;
}

void PeerEngine::post_due_sends(Clock::time_point now, bool& progressed) {
  for (auto it = to_post_.begin(); it != to_post_.end();) {
    if (it->release > now) {
      ++it;
      continue;
    }
    Send s = std::move(*it);
    it = to_post_.erase(it);
    DLION_MPI(MPI_Isend(s.msg->data(), static_cast<int>(s.msg->size()), MPI_BYTE, s.peer, s.tag,
                        comm_, &s.req));
    in_flight_.push_back(std::move(s));
    progressed = true;
  }
}

void PeerEngine::test_sends(bool& progressed) {
  for (std::size_t i = 0; i < in_flight_.size();) {
    int done = 0;
    DLION_MPI(MPI_Test(&in_flight_[i].req, &done, MPI_STATUS_IGNORE));
    if (done) {
      if (in_flight_[i].tag == kHeartbeatTag)
        beat_in_flight_[static_cast<std::size_t>(in_flight_[i].peer)] = 0;
      if (in_flight_[i].msg.use_count() == 1) give(std::move(*in_flight_[i].msg));
      in_flight_[i] = std::move(in_flight_.back());
      in_flight_.pop_back();
      progressed = true;
    } else {
      ++i;
    }
  }
}

void PeerEngine::match_incoming(bool& progressed) {
  std::vector<int> tags = {kHeartbeatTag, kAckTag, kProbeTag};
  {
    std::lock_guard<std::mutex> lock(groups_mu_);
    for (const auto& [id, g] : groups_)
      if (g.registered) tags.push_back(kGroupTag + static_cast<int>(id));
  }
  for (int tag : tags) {
    for (int matched = 0; matched < 64; ++matched) {
      int flag = 0;
      MPI_Message handle = MPI_MESSAGE_NULL;
      MPI_Status status;
      DLION_MPI(MPI_Improbe(MPI_ANY_SOURCE, tag, comm_, &flag, &handle, &status));
      if (!flag) break;
      int count = 0;
      DLION_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
      Recv r;
      r.peer = status.MPI_SOURCE, r.tag = tag;
      r.msg = take(static_cast<std::size_t>(count));
      DLION_MPI(MPI_Imrecv(r.msg.data(), count, MPI_BYTE, &handle, &r.req));
      receiving_.push_back(std::move(r));
      progressed = true;
    }
  }
}

void PeerEngine::test_receives(Clock::time_point now, bool& progressed) {
  for (std::size_t i = 0; i < receiving_.size();) {
    int done = 0;
    DLION_MPI(MPI_Test(&receiving_[i].req, &done, MPI_STATUS_IGNORE));
    if (!done) {
      ++i;
      continue;
    }
    Recv r = std::move(receiving_[i]);
    receiving_.erase(receiving_.begin() + static_cast<std::ptrdiff_t>(i));
    on_message(r.peer, r.tag, std::move(r.msg), now);
    progressed = true;
  }
}

}  // namespace dlion
